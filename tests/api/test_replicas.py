"""Two server processes (replicas) over one PostgreSQL database: a terminal streaming
from one replica sees payments made through the other, in order, exactly once; the
payment itself can be paid only once whichever replica the consumers hit."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from protos.scanpay.v1 import merchant_pb2, merchant_pb2_grpc, wallet_pb2, wallet_pb2_grpc
from tests.support.psp import LivePsp, bearer

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def replicas(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LivePsp, LivePsp]]:
    a = LivePsp(tmp_path_factory.mktemp("replica-a"), postgres_url).start()
    b = LivePsp(tmp_path_factory.mktemp("replica-b"), postgres_url)
    b._secret = a._secret  # one deployment: the replicas share the signing secret
    b.start()
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_stream_on_one_replica_sees_payments_made_through_the_other(
    replicas: tuple[LivePsp, LivePsp],
) -> None:
    a, b = replicas
    shop = a.create_merchant(name="Replica Shop")
    email = f"r-{uuid.uuid4().hex[:8]}@example.com"
    a.create_consumer(email)
    received: list[tuple[str, str, str]] = []
    started = threading.Event()

    def watch() -> None:
        with grpc.insecure_channel(b.address) as ch:
            call = merchant_pb2_grpc.MerchantServiceStub(ch).WatchPayments(
                merchant_pb2.WatchPaymentsRequest(), metadata=bearer(shop.api_key), timeout=20
            )
            started.set()
            for ev in call:
                received.append(
                    (ev.cursor, merchant_pb2.PaymentEventType.Name(ev.type), ev.payment.id)
                )
                if len(received) == 6:
                    call.cancel()
                    return

    t = threading.Thread(target=watch)
    t.start()
    started.wait(10)
    paid = []
    for amount in (100, 200, 300):
        pid, payload = a.create_payment(shop.api_key, amount)
        a.wallet_pay(email, payload=payload)
        paid.append(pid)
    t.join(30)
    assert [int(c) for c, _, _ in received] == list(range(1, 7))
    assert [(k, p) for _, k, p in received] == [
        (kind, pid)
        for pid in paid
        for kind in ("PAYMENT_EVENT_TYPE_CREATED", "PAYMENT_EVENT_TYPE_SUCCEEDED")
    ]


def test_one_qr_paid_once_across_replicas(replicas: tuple[LivePsp, LivePsp]) -> None:
    a, b = replicas
    shop = a.create_merchant(name="Race Shop")
    pid, payload = a.create_payment(shop.api_key, 500)
    emails = [f"race{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(8)]
    for e in emails:
        a.create_consumer(e)

    # Everyone scans first (all quotes payable), then all tap "pay" at once, half of
    # them on each replica.
    quotes = []
    for i, e in enumerate(emails):
        server = (a, b)[i % 2]
        md = bearer(server.login(e))
        with grpc.insecure_channel(server.address) as ch:
            q = wallet_pb2_grpc.WalletServiceStub(ch).ResolveQr(
                wallet_pb2.ResolveQrRequest(payload=payload), metadata=md
            )
        assert q.payable
        quotes.append((server, md, q.quote_id))
    go = threading.Barrier(8)

    def pay(i: int) -> str:
        server, md, quote_id = quotes[i]
        with grpc.insecure_channel(server.address) as ch:
            stub = wallet_pb2_grpc.WalletServiceStub(ch)
            go.wait(10)
            try:
                stub.Pay(
                    wallet_pb2.PayRequest(quote_id=quote_id, idempotency_key=uuid.uuid4().hex),
                    metadata=md,
                )
                return "paid"
            except grpc.RpcError as exc:
                return exc.code().name

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(pay, range(8)))
    assert outcomes.count("paid") == 1, outcomes
    assert sorted(outcomes) == ["FAILED_PRECONDITION"] * 7 + ["paid"], outcomes
    assert a.app.admin.ledger_check() == []
    with grpc.insecure_channel(b.address) as ch:
        got = merchant_pb2_grpc.MerchantServiceStub(ch).GetPayment(
            merchant_pb2.GetPaymentRequest(payment_id=pid), metadata=bearer(shop.api_key)
        )
    assert got.status == 2  # SUCCEEDED


def test_busy_replicas_do_not_deadlock(replicas: tuple[LivePsp, LivePsp]) -> None:
    """Both replicas writing for one merchant at once (its event counter and balance are
    hot rows): every sale goes through, none fails with a deadlock."""
    a, b = replicas
    shop = a.create_merchant(name="Busy Shop")
    emails = [f"busy{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(12)]
    for e in emails:
        a.create_consumer(e)

    def sale(i: int) -> str:
        server = (a, b)[i % 2]
        _, payload = server.create_payment(shop.api_key, 100 + i)
        try:
            server.wallet_pay(emails[i % len(emails)], payload=payload)
            return "paid"
        except grpc.RpcError as exc:
            return exc.code().name

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(sale, range(48)))
    assert outcomes == ["paid"] * 48
    assert a.app.admin.ledger_check() == []
