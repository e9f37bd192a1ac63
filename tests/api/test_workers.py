"""``scanpay psp serve --workers 2``: two server processes on one port and one SQLite
file. Connections land on either process; a terminal's stream on one sees, in order and
once, the payments made through the other; one QR is paid once."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.scanpay.v1 import (
    common_pb2,
    merchant_pb2,
    merchant_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from psp_server.bootstrap import build_app
from psp_server.config import Settings
from tests.support.psp import PspProcess, bearer

SECRET = "process-test-secret"  # what PspProcess gives the server


def seed_shop(data: Path) -> dict[str, str]:
    """A merchant with a till and six funded wallets, written before the server starts:
    the till's API key as ``api_key`` and the wallets' e-mails as ``e0`` .. ``e5``."""
    app = build_app(Settings(data_dir=data, secret=SECRET.encode()))
    m = app.admin.create_merchant(
        name="Two Process Shop", city="Berlin", country="DE", currency="EUR", mcc="5411"
    )
    key = app.admin.create_terminal(m.id, "T1").api_key
    emails = [f"w{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(6)]
    for e in emails:
        c = app.admin.create_consumer(email=e, password="password1", currency="EUR", kyc_tier=2)
        app.admin.top_up(c.id, 100_00, "EUR")
    app.close()
    return {"api_key": key, **{f"e{i}": e for i, e in enumerate(emails)}}


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[PspProcess, dict[str, str]]]:
    seed = seed_shop(tmp_path / "psp")
    proc = PspProcess(tmp_path / "psp", workers=2).start()
    try:
        yield proc, seed
    finally:
        proc.stop()


def channels(address: str, n: int) -> list[grpc.Channel]:
    # Separate connections (no shared subchannel), so they spread over both processes.
    return [
        grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(n)
    ]


class Watcher:
    """A merchant's WatchPayments stream read in a thread until ``want`` events came."""

    def __init__(self, address: str, md: tuple[tuple[str, str], ...], want: int) -> None:
        self.received: list[tuple[int, str, str]] = []
        self._started = threading.Event()
        self._address, self._md, self._want = address, md, want
        self._thread = threading.Thread(target=self._watch)
        self._thread.start()
        assert self._started.wait(10)

    def _watch(self) -> None:
        with grpc.insecure_channel(self._address) as ch:
            call = merchant_pb2_grpc.MerchantServiceStub(ch).WatchPayments(
                merchant_pb2.WatchPaymentsRequest(), metadata=self._md, timeout=30
            )
            self._started.set()
            for ev in call:
                self.received.append(
                    (int(ev.cursor), merchant_pb2.PaymentEventType.Name(ev.type), ev.payment.id)
                )
                if len(self.received) == self._want:
                    call.cancel()
                    return

    def assert_each_sale_once_in_order(self, paid: list[str]) -> None:
        """Every payment's CREATED and SUCCEEDED, in the order the sales were made, with
        the cursors 1, 2, 3, ... and nothing else."""
        self._thread.join(30)
        assert [c for c, _, _ in self.received] == list(range(1, self._want + 1))
        assert [(k, pid) for _, k, pid in self.received] == [
            (kind, pid)
            for pid in paid
            for kind in ("PAYMENT_EVENT_TYPE_CREATED", "PAYMENT_EVENT_TYPE_SUCCEEDED")
        ]


def test_stream_sees_payments_from_both_processes(
    two_workers: tuple[PspProcess, dict[str, str]],
) -> None:
    proc, seed = two_workers
    md = bearer(seed["api_key"])
    watcher = Watcher(proc.address, md, want=12)
    chans = channels(proc.address, 6)
    paid = []
    try:
        for i, ch in enumerate(chans):
            ms = merchant_pb2_grpc.MerchantServiceStub(ch)
            ws = wallet_pb2_grpc.WalletServiceStub(ch)
            p = ms.CreatePayment(
                merchant_pb2.CreatePaymentRequest(
                    order_id=f"W{i}",
                    amount=common_pb2.Money(amount_minor=100 + i, currency="EUR"),
                    idempotency_key=uuid.uuid4().hex,
                ),
                metadata=md,
            )
            s = ws.Login(wallet_pb2.LoginRequest(email=seed[f"e{i}"], password="password1"))
            wmd = bearer(s.access_token)
            q = ws.ResolveQr(wallet_pb2.ResolveQrRequest(payload=p.qr_payload), metadata=wmd)
            ws.Pay(
                wallet_pb2.PayRequest(quote_id=q.quote_id, idempotency_key=uuid.uuid4().hex),
                metadata=wmd,
            )
            paid.append(p.id)
    finally:
        for ch in chans:
            ch.close()
    watcher.assert_each_sale_once_in_order(paid)


def _listening_sockets(port: int) -> int:
    """Sockets in LISTEN state on ``port`` (each worker process has its own)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def test_port_is_announced_once_every_worker_listens(
    two_workers: tuple[PspProcess, dict[str, str]],
) -> None:
    # Clients connect the moment "psp listening" is printed; a worker that listened later
    # would get none of those connections.
    proc, _ = two_workers
    port = int(proc.address.rsplit(":", 1)[1])
    assert _listening_sockets(port) == 2


@pytest.mark.parametrize("delay", ["-1", "101", "nan"])
def test_serve_refuses_a_commit_delay_out_of_range_and_creates_nothing(
    tmp_path: Path, delay: str
) -> None:
    data = tmp_path / "psp"
    cmd = [sys.executable, "-m", "psp_server", "psp", "serve", "--listen", "127.0.0.1:0"]
    cmd += ["--data", str(data), "--commit-delay-ms", delay]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "--commit-delay-ms must be between 0 and 100" in done.stderr
    assert not (data / "psp.db").exists()
