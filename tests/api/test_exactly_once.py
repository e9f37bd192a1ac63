"""Exactly once over the real API: idempotent replays return the identical response and
make one effect; a reused key with another request is refused; concurrent payers of one
QR and concurrent pays draining one wallet never double-spend."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import grpc
import pytest

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import wallet_pb2 as w
from tests.api.helpers import (
    EXISTS,
    PRECONDITION,
    Api,
    ConsumerClient,
    api_for,
    expect,
    key,
    money,
    status_name,
    status_of,
    type_name,
)
from tests.support.psp import LivePsp


@pytest.fixture(scope="module")
def api(psp: LivePsp) -> Iterator[Api]:
    with api_for(psp) as a:
        yield a


# -- replays -------------------------------------------------------------------------------


def test_create_payment_replay(api: Api) -> None:
    mer = api.merchant()
    req = m.CreatePaymentRequest(
        order_id="IDEM-1", amount=money(1234), description="x", idempotency_key=key()
    )
    first = mer.stub.CreatePayment(req)
    again = mer.stub.CreatePayment(req)
    assert again == first
    assert [p.id for p in mer.all_payments()] == [first.id]
    assert [type_name(e) for e in mer.log()] == ["CREATED"]
    # Keys belong to one merchant: another merchant's same key is a new payment.
    other = api.merchant()
    theirs = other.stub.CreatePayment(req)
    assert theirs.id != first.id and theirs.merchant_id == other.merchant_id


def test_key_reused_for_another_request(api: Api) -> None:
    mer = api.merchant()
    con = api.consumer()
    k = key()
    p = mer.stub.CreatePayment(
        m.CreatePaymentRequest(order_id="A", amount=money(1000), idempotency_key=k)
    )
    for changed in (
        m.CreatePaymentRequest(order_id="A", amount=money(1001), idempotency_key=k),
        m.CreatePaymentRequest(order_id="B", amount=money(1000), idempotency_key=k),
        m.CreatePaymentRequest(
            order_id="A", amount=money(1000), idempotency_key=k, expires_in_seconds=60
        ),
    ):
        expect(EXISTS, "IDEMPOTENCY_KEY_REUSED", mer.stub.CreatePayment, changed)
    assert len(mer.all_payments()) == 1

    pk = key()
    con.stub.Pay(w.PayRequest(quote_id=con.resolve(p.qr_payload).quote_id, idempotency_key=pk))
    rk = key()
    mer.stub.RefundPayment(
        m.RefundPaymentRequest(payment_id=p.id, amount=money(100), idempotency_key=rk)
    )
    expect(
        EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
        mer.stub.RefundPayment,
        m.RefundPaymentRequest(payment_id=p.id, amount=money(200), idempotency_key=rk),
    )
    assert mer.get(p.id).refunded == money(100)

    # Keys are per RPC: the CreatePayment key is free for a CancelPayment.
    p2 = mer.create(500)
    ck = k
    mer.stub.CancelPayment(m.CancelPaymentRequest(payment_id=p2.id, idempotency_key=ck))
    expect(
        EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
        mer.stub.CancelPayment,
        m.CancelPaymentRequest(payment_id=mer.create(600).id, idempotency_key=ck),
    )

    tk = key()
    con.stub.TopUp(w.TopUpRequest(amount=money(100), idempotency_key=tk))
    expect(
        EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
        con.stub.TopUp,
        w.TopUpRequest(amount=money(101), idempotency_key=tk),
    )

    p3 = mer.create(700)
    q3 = con.resolve(p3.qr_payload)
    expect(
        EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
        con.stub.Pay,
        w.PayRequest(quote_id=q3.quote_id, idempotency_key=pk),
    )
    assert status_name(mer.get(p3.id)) == "PENDING"
    assert con.balance_minor() == 100_00 - 1000 + 100 + 100
    # ... and a key of one merchant's RPC is free for the same RPC of another.
    api.merchant().stub.CreatePayment(
        m.CreatePaymentRequest(order_id="A", amount=money(5), idempotency_key=k)
    )


def test_pay_replay_identical_and_charged_once(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    p = mer.create(2500)
    q = con.resolve(p.qr_payload)
    req = w.PayRequest(quote_id=q.quote_id, idempotency_key=key())
    first = con.stub.Pay(req)
    assert con.stub.Pay(req) == first
    # A retry long after the quote's expiry still gets the stored receipt, not an error.
    psp.clock.advance(timedelta(minutes=6))
    assert con.stub.Pay(req) == first
    assert con.balance_minor() == 100_00 - 2500
    assert [type_name(e) for e in mer.log()] == ["CREATED", "SUCCEEDED"]
    txs = con.stub.ListTransactions(w.ListTransactionsRequest()).transactions
    assert [t.kind for t in txs].count(w.TRANSACTION_KIND_PAYMENT) == 1


def test_static_pay_replay(api: Api) -> None:
    mer = api.merchant()
    con = api.consumer()
    static = mer.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload
    req = w.PayRequest(payload=static, amount=money(333), reference="T9", idempotency_key=key())
    first = con.stub.Pay(req)
    assert con.stub.Pay(req) == first
    assert [p.id for p in mer.all_payments()] == [first.payment_id]
    assert con.balance_minor() == 100_00 - 333


def test_refund_and_cancel_replay(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    p = mer.create(1000)
    con.pay(p.qr_payload)
    rreq = m.RefundPaymentRequest(payment_id=p.id, amount=money(400), idempotency_key=key())
    r1 = mer.stub.RefundPayment(rreq)
    assert mer.stub.RefundPayment(rreq) == r1
    assert mer.get(p.id).refunded == money(400)
    assert con.balance_minor() == 100_00 - 600

    p2 = mer.create(800)
    creq = m.CancelPaymentRequest(payment_id=p2.id, idempotency_key=key())
    c1 = mer.stub.CancelPayment(creq)
    assert mer.stub.CancelPayment(creq) == c1
    types = [type_name(e) for e in mer.log()]
    assert Counter(types) == Counter({"CREATED": 2, "SUCCEEDED": 1, "REFUNDED": 1, "CANCELED": 1})
    assert psp.app.admin.ledger_check() == []


def test_top_up_replay_returns_the_original_answer(api: Api) -> None:
    con = api.consumer(balance_minor=10_00)
    req = w.TopUpRequest(amount=money(5_00), idempotency_key=key())
    first = con.stub.TopUp(req)
    assert first.available == money(15_00)
    con.stub.TopUp(w.TopUpRequest(amount=money(1_00), idempotency_key=key()))
    assert con.stub.TopUp(req) == first  # the stored response, not today's balance
    assert con.balance_minor() == 16_00


def test_replay_fails_the_same_way_when_the_effect_failed(api: Api) -> None:
    """A failed call stores nothing: the same key may be retried once the cause is gone."""
    mer = api.merchant()
    con = api.consumer(balance_minor=5_00)
    p = mer.create(10_00)
    q = con.resolve(p.qr_payload)
    req = w.PayRequest(quote_id=q.quote_id, idempotency_key=key())
    expect(PRECONDITION, "INSUFFICIENT_FUNDS", con.stub.Pay, req)
    con.stub.TopUp(w.TopUpRequest(amount=money(10_00), idempotency_key=key()))
    receipt = con.stub.Pay(req)
    assert receipt.payment_id == p.id and receipt.balance_after == money(5_00)


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_create_with_one_key(api: Api) -> None:
    mer = api.merchant()
    req = m.CreatePaymentRequest(order_id="RACE", amount=money(999), idempotency_key=key())
    barrier = threading.Barrier(10)

    def create(_: int) -> Any:
        barrier.wait()
        return mer.stub.CreatePayment(req)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(create, range(10)))
    assert all(r == results[0] for r in results)
    assert [p.id for p in mer.all_payments()] == [results[0].id]
    assert [type_name(e) for e in mer.log()] == ["CREATED"]


def test_concurrent_pays_with_one_key(api: Api) -> None:
    mer = api.merchant()
    con = api.consumer()
    p = mer.create(700)
    req = w.PayRequest(quote_id=con.resolve(p.qr_payload).quote_id, idempotency_key=key())
    stub = con.stub
    barrier = threading.Barrier(10)

    def pay(_: int) -> Any:
        barrier.wait()
        return stub.Pay(req)

    with ThreadPoolExecutor(10) as pool:
        receipts = list(pool.map(pay, range(10)))
    assert all(r == receipts[0] for r in receipts)
    assert con.balance_minor() == 100_00 - 700


def test_fifty_concurrent_payers_one_qr(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    payers = [api.consumer(balance_minor=50_00) for _ in range(50)]
    p = mer.create(12_34)
    resolved = threading.Barrier(50)

    def scan_and_pay(con: ConsumerClient) -> tuple[str, Any]:
        stub = con.stub  # each payer with their own token
        q = stub.ResolveQr(w.ResolveQrRequest(payload=p.qr_payload))
        assert q.payable and q.quote_id
        resolved.wait()  # everyone holds a valid quote; now all tap "pay" at once
        try:
            return "ok", stub.Pay(w.PayRequest(quote_id=q.quote_id, idempotency_key=key()))
        except grpc.RpcError as exc:
            return "err", status_of(exc)

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(scan_and_pay, payers))

    wins = [r for kind, r in outcomes if kind == "ok"]
    errors = [r for kind, r in outcomes if kind == "err"]
    assert len(wins) == 1
    assert errors == [(PRECONDITION, "PAYMENT_ALREADY_PAID")] * 49
    assert wins[0].payment_id == p.id
    charged = [c for c in payers if c.balance_minor() != 50_00]
    assert len(charged) == 1 and charged[0].balance_minor() == 50_00 - 12_34
    assert wins[0].balance_after == money(50_00 - 12_34)
    paid = mer.get(p.id)
    assert status_name(paid) == "SUCCEEDED"
    events = mer.log()
    assert [type_name(e) for e in events] == ["CREATED", "SUCCEEDED"]
    assert mer.balance_minor() == 12_34 - 12
    assert psp.app.admin.ledger_check() == []


def test_concurrent_pays_drain_one_wallet(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer(balance_minor=100_00)
    amount = 10_00
    qrs = [mer.create(amount).qr_payload for _ in range(30)]
    quotes = [con.resolve(payload).quote_id for payload in qrs]
    stub = con.stub
    seen: list[int] = []
    stop = threading.Event()

    def watch_balance() -> None:
        while not stop.is_set():
            seen.append(stub.GetBalance(w.GetBalanceRequest()).available.amount_minor)

    barrier = threading.Barrier(30)

    def pay(quote_id: str) -> tuple[str, Any]:
        barrier.wait()
        try:
            return "ok", stub.Pay(w.PayRequest(quote_id=quote_id, idempotency_key=key()))
        except grpc.RpcError as exc:
            return "err", status_of(exc)

    watcher = threading.Thread(target=watch_balance)
    watcher.start()
    try:
        with ThreadPoolExecutor(30) as pool:
            outcomes = list(pool.map(pay, quotes))
    finally:
        stop.set()
        watcher.join()

    wins = [r for kind, r in outcomes if kind == "ok"]
    errors = [r for kind, r in outcomes if kind == "err"]
    assert len(wins) == 10
    assert errors == [(PRECONDITION, "INSUFFICIENT_FUNDS")] * 20
    assert seen and min(seen) >= 0
    assert all(r.balance_after.amount_minor >= 0 for r in wins)
    assert sorted(r.balance_after.amount_minor for r in wins) == list(range(0, 100_00, amount))
    final = con.balance()
    assert final.available == money(0)
    assert final.spent_today == money(len(wins) * amount)
    paid = mer.all_payments(statuses=[c.PAYMENT_STATUS_SUCCEEDED])
    assert len(paid) == len(wins)
    assert mer.balance_minor() == len(wins) * (amount - 10)
    assert psp.app.admin.ledger_check() == []
