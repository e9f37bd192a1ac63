"""``scanpay psp serve --gateways 2``: a core process that owns the database and two
gateway processes on the port that hand it every call. The whole API suite also runs in
this layout in one process (the ``sqlite-gateway`` backend of the ``psp`` fixture); these
tests are about the processes: the port, a gateway that dies, a core that dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.scanpay.v1 import (
    common_pb2,
    merchant_pb2,
    merchant_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from tests.api.test_workers import Watcher, _listening_sockets, channels, seed_shop
from tests.support.psp import PspProcess, bearer


@pytest.fixture
def split(tmp_path: Path) -> Iterator[tuple[PspProcess, dict[str, str]]]:
    seed = seed_shop(tmp_path / "psp")
    proc = PspProcess(tmp_path / "psp", gateways=2).start()
    try:
        yield proc, seed
    finally:
        proc.stop()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _sale(ch: grpc.Channel, key: str, email: str, order: str) -> tuple[str, str]:
    """Create, resolve and pay; returns the payment id and its status afterwards."""
    ms = merchant_pb2_grpc.MerchantServiceStub(ch)
    ws = wallet_pb2_grpc.WalletServiceStub(ch)
    p = ms.CreatePayment(
        merchant_pb2.CreatePaymentRequest(
            order_id=order,
            amount=common_pb2.Money(amount_minor=250, currency="EUR"),
            idempotency_key=uuid.uuid4().hex,
        ),
        metadata=bearer(key),
        timeout=10,
    )
    s = ws.Login(wallet_pb2.LoginRequest(email=email, password="password1"), timeout=10)
    wmd = bearer(s.access_token)
    q = ws.ResolveQr(wallet_pb2.ResolveQrRequest(payload=p.qr_payload), metadata=wmd, timeout=10)
    r = ws.Pay(
        wallet_pb2.PayRequest(quote_id=q.quote_id, idempotency_key=uuid.uuid4().hex),
        metadata=wmd,
        timeout=10,
    )
    assert r.payment_id == p.id and r.amount.amount_minor == 250
    got = ms.GetPayment(
        merchant_pb2.GetPaymentRequest(payment_id=p.id), metadata=bearer(key), timeout=10
    )
    return p.id, common_pb2.PaymentStatus.Name(got.status)


def test_sales_through_both_gateways_reach_the_stream_in_order_once(
    split: tuple[PspProcess, dict[str, str]],
) -> None:
    proc, seed = split
    assert proc.proc is not None
    port = int(proc.address.rsplit(":", 1)[1])
    # Two gateways listen; the core does not (it would take connections and serve them).
    assert len(_children(proc.proc.pid)) == 2
    assert _listening_sockets(port) == 2
    md = bearer(seed["api_key"])
    watcher = Watcher(proc.address, md, want=12)
    chans = channels(proc.address, 6)
    paid = []
    try:
        for i, ch in enumerate(chans):
            pid, status = _sale(ch, seed["api_key"], seed[f"e{i}"], f"G{i}")
            assert status == "PAYMENT_STATUS_SUCCEEDED"
            paid.append(pid)
        # Health checking and reflection are answered by the gateway itself.
        health = health_pb2_grpc.HealthStub(chans[0]).Check(
            health_pb2.HealthCheckRequest(service="scanpay.v1.WalletService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # An error comes back with its status and reason, as from one process.
        with pytest.raises(grpc.RpcError) as err:
            merchant_pb2_grpc.MerchantServiceStub(chans[1]).CreatePayment(
                merchant_pb2.CreatePaymentRequest(
                    order_id="BAD",
                    amount=common_pb2.Money(amount_minor=-5, currency="EUR"),
                    idempotency_key=uuid.uuid4().hex,
                ),
                metadata=md,
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details()
    finally:
        for ch in chans:
            ch.close()
    watcher.assert_each_sale_once_in_order(paid)


def test_a_gateway_that_dies_is_replaced_and_the_sale_goes_on(
    split: tuple[PspProcess, dict[str, str]],
) -> None:
    proc, seed = split
    assert proc.proc is not None
    port = int(proc.address.rsplit(":", 1)[1])
    before = _children(proc.proc.pid)
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = _children(proc.proc.pid)
        if len(now) == 2 and before[0] not in now and _listening_sockets(port) == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no new gateway: children {_children(proc.proc.pid)}")
    for i, ch in enumerate(channels(proc.address, 4)):
        with ch:
            _, status = _sale(ch, seed["api_key"], seed[f"e{i}"], f"AFTER{i}")
            assert status == "PAYMENT_STATUS_SUCCEEDED"


def test_gateways_stop_with_their_core(split: tuple[PspProcess, dict[str, str]]) -> None:
    proc, _ = split
    assert proc.proc is not None
    port = int(proc.address.rsplit(":", 1)[1])
    gateways = _children(proc.proc.pid)
    proc.kill()  # SIGKILL: no chance to stop them itself
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{g}").exists() for g in gateways):
            break
        time.sleep(0.2)
    alive = [g for g in gateways if Path(f"/proc/{g}").exists()]
    # A zombie (exited, not yet reaped by init) holds no socket.
    assert all(Path(f"/proc/{g}/stat").read_text().split()[2] == "Z" for g in alive)
    assert _listening_sockets(port) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gateways", "-1"], "--gateways must be between 0 and 64"),
        (["--gateways", "65"], "--gateways must be between 0 and 64"),
        (["--gateways", "2", "--workers", "2"], "--gateways and --workers do not combine"),
    ],
)
def test_serve_refuses_bad_gateway_counts_and_creates_nothing(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    data = tmp_path / "psp"
    cmd = [sys.executable, "-m", "psp_server", "psp", "serve", "--listen", "127.0.0.1:0"]
    cmd += ["--data", str(data), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (data / "psp.db").exists()


def test_a_gateway_answers_reads_itself_and_refuses_writes_clearly_without_the_core(
    tmp_path: Path,
) -> None:
    """Reads (ResolveQr, GetBalance, GetPayment, ...) are answered by the gateway from the
    database; everything else goes to the core, and with the core gone gets UNAVAILABLE
    CORE_UNAVAILABLE rather than hanging or an unknown error."""
    import asyncio

    from google.rpc import error_details_pb2, status_pb2

    from tests.support.psp import LivePsp

    psp = LivePsp(tmp_path / "psp", gateway=True).start()
    try:
        mer = psp.create_merchant()
        email = f"r-{uuid.uuid4().hex[:6]}@example.com"
        psp.create_consumer(email, balance_minor=20_00)
        payment_id, payload = psp.create_payment(mer.api_key, 500)
        wmd = bearer(psp.login(email))
        asyncio.run_coroutine_threadsafe(psp.core.stop(), psp._loop).result(10)
        with psp.channel() as ch:
            ws = wallet_pb2_grpc.WalletServiceStub(ch)
            ms = merchant_pb2_grpc.MerchantServiceStub(ch)
            q = ws.ResolveQr(wallet_pb2.ResolveQrRequest(payload=payload), metadata=wmd, timeout=5)
            assert q.amount.amount_minor == 500 and q.payable
            assert (
                ws.GetBalance(
                    wallet_pb2.GetBalanceRequest(), metadata=wmd, timeout=5
                ).available.amount_minor
                == 20_00
            )
            got = ms.GetPayment(
                merchant_pb2.GetPaymentRequest(payment_id=payment_id),
                metadata=bearer(mer.api_key),
                timeout=5,
            )
            assert got.status == common_pb2.PAYMENT_STATUS_PENDING
            for call in (
                lambda: ws.Pay(
                    wallet_pb2.PayRequest(quote_id=q.quote_id, idempotency_key="k1"),
                    metadata=wmd,
                    timeout=5,
                ),
                lambda: ms.CreatePayment(
                    merchant_pb2.CreatePaymentRequest(
                        order_id="O-2",
                        amount=common_pb2.Money(amount_minor=100, currency="EUR"),
                        idempotency_key="k2",
                    ),
                    metadata=bearer(mer.api_key),
                    timeout=5,
                ),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                (blob,) = [
                    v for k, v in err.value.trailing_metadata() if k == "grpc-status-details-bin"
                ]
                info = error_details_pb2.ErrorInfo()
                status_pb2.Status.FromString(blob).details[0].Unpack(info)
                assert info.reason == "CORE_UNAVAILABLE"
        # Nothing was paid: the wallet still has its balance.
        assert psp.app.db.read_sync(lambda s: s.get_payment(payment_id)).status.value == "pending"
    finally:
        psp.stop()
