"""MerchantService over a real server on loopback (SQLite and PostgreSQL): every RPC's happy
path and every error reason it can give."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import merchant_pb2_grpc
from protos.scanpay.v1 import wallet_pb2 as w
from psp_server.domain import qr
from tests.api.helpers import (
    INVALID,
    NOT_FOUND,
    PRECONDITION,
    UNAUTH,
    Api,
    MerchantClient,
    api_for,
    bearer,
    expect,
    key,
    money,
    near,
    rpc_error,
    status_name,
    ts_dt,
    type_name,
)
from tests.support.psp import LivePsp


@pytest.fixture(scope="module")
def api(psp: LivePsp) -> Iterator[Api]:
    with api_for(psp) as a:
        yield a


@pytest.fixture(scope="module")
def shop(api: Api) -> MerchantClient:
    """A merchant shared by the validation tests (they must leave nothing behind)."""
    return api.merchant(name="Validation Shop")


# -- GetMerchant, health, reflection -------------------------------------------------------


def test_get_merchant(api: Api) -> None:
    mer = api.merchant(name="Café Zürich", city="Zürich", country="CH", currency="CHF", label="T2")
    got = mer.stub.GetMerchant(m.GetMerchantRequest())
    assert got.id == mer.merchant_id
    assert (got.name, got.city, got.country, got.currency) == ("Café Zürich", "Zürich", "CH", "CHF")
    assert got.mcc == "5462"
    assert got.discount_rate_bps == 100  # the server default
    assert (got.terminal_id, got.terminal_label) == (mer.terminal_id, "T2")


def test_health_serving_and_reflection(api: Api) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", "scanpay.v1.MerchantService", "scanpay.v1.WalletService"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING

    refl = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    responses = list(
        refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
    )
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"scanpay.v1.MerchantService", "scanpay.v1.WalletService"} <= names
    assert "grpc.health.v1.Health" in names


# -- authentication ----------------------------------------------------------------------

_EVERY_RPC: list[tuple[str, Any]] = [
    ("GetMerchant", m.GetMerchantRequest()),
    ("CreatePayment", m.CreatePaymentRequest()),
    ("GetPayment", m.GetPaymentRequest()),
    ("CancelPayment", m.CancelPaymentRequest()),
    ("ListPayments", m.ListPaymentsRequest()),
    ("RefundPayment", m.RefundPaymentRequest()),
    ("GetStaticQr", m.GetStaticQrRequest()),
    ("GetDailySummary", m.GetDailySummaryRequest()),
    ("WatchPayments", m.WatchPaymentsRequest()),
    ("SwipeCard", m.SwipeCardRequest()),
    ("CapturePayment", m.CapturePaymentRequest()),
    ("VoidPayment", m.VoidPaymentRequest()),
    ("CloseBatch", m.CloseBatchRequest()),
]


def _call(stub: merchant_pb2_grpc.MerchantServiceStub, rpc: str, req: Any, md: Any) -> Any:
    method = getattr(stub, rpc)
    if rpc == "WatchPayments":
        return list(method(req, metadata=md, timeout=5))
    return method(req, metadata=md, timeout=5)


@pytest.mark.parametrize("rpc,req", _EVERY_RPC, ids=[r for r, _ in _EVERY_RPC])
def test_every_rpc_needs_an_api_key(api: Api, shop: MerchantClient, rpc: str, req: Any) -> None:
    stub = api.raw_merchant()
    prefix = shop.api_key.split("_")[1]
    cases = [
        ((), "MISSING_CREDENTIALS"),
        ((("authorization", "Basic dXNlcjpwdw=="),), "INVALID_AUTH_HEADER"),
        ((("authorization", shop.api_key),), "INVALID_AUTH_HEADER"),  # no "Bearer "
        (bearer(""), "INVALID_API_KEY"),
        (bearer("nonsense"), "INVALID_API_KEY"),
        (bearer("sk_0123456789_" + "x" * 32), "INVALID_API_KEY"),  # well formed, unknown
        (bearer(f"sk_{prefix}_{'y' * 32}"), "INVALID_API_KEY"),  # right prefix, wrong secret
        (bearer(shop.api_key + "x"), "INVALID_API_KEY"),
        (bearer("sk_" + "a" * 200), "INVALID_API_KEY"),
    ]
    for md, reason in cases:
        assert rpc_error(_call, stub, rpc, req, md) == (UNAUTH, reason), (md, reason)


def test_wallet_token_is_not_an_api_key(api: Api) -> None:
    con = api.consumer()
    expect(
        UNAUTH,
        "INVALID_API_KEY",
        api.raw_merchant().GetMerchant,
        m.GetMerchantRequest(),
        metadata=bearer(con.token),
    )


# -- CreatePayment / GetPayment ----------------------------------------------------------


def test_create_and_get_payment(api: Api, psp: LivePsp) -> None:
    mer = api.merchant(name="Corner Bakery")
    before = psp.clock.now()
    p = mer.create(1250, order_id="ORDER-42", description="2 croissants")
    assert p.id.startswith("pay_")
    assert p.merchant_id == mer.merchant_id
    assert (p.order_id, p.description) == ("ORDER-42", "2 croissants")
    assert p.amount == money(1250)
    assert status_name(p) == "PENDING"
    assert p.method == c.PAYMENT_METHOD_QR_DYNAMIC
    assert (p.terminal_id, p.terminal_label) == (mer.terminal_id, "Till 1")
    assert p.refunded == money(0)
    assert not p.HasField("paid_at") and not p.HasField("fee") and not p.HasField("fx")
    assert near(ts_dt(p.created_at), before)
    assert near(ts_dt(p.expires_at), ts_dt(p.created_at) + timedelta(minutes=15))

    parsed = qr.parse(p.qr_payload)
    assert parsed.scheme == "SCANPAY" and parsed.payable
    assert parsed.initiation == "dynamic"
    assert parsed.amount() is not None and parsed.amount_text == "12.50"
    assert parsed.currency == "EUR"
    assert parsed.merchant_name == "CORNER BAKERY"
    assert parsed.bill_number == "ORDER-42"
    assert p.pay_url.endswith("/p/" + (parsed.scanpay_token or "-"))

    got = mer.get(p.id)
    assert got == p


def test_create_payment_custom_expiry_and_unicode_order(api: Api) -> None:
    mer = api.merchant()
    p = mer.create(500, order_id="Bestellung Nr. 7 – Café", expires_in_seconds=60)
    assert near(ts_dt(p.expires_at), ts_dt(p.created_at) + timedelta(seconds=60))
    assert p.order_id == "Bestellung Nr. 7 – Café"
    # Not QR alphanumeric: the bill number is left out of the QR, never altered.
    assert qr.parse(p.qr_payload).bill_number is None


def _create(**overrides: Any) -> m.CreatePaymentRequest:
    req = m.CreatePaymentRequest(
        order_id="ORDER-1", amount=money(1000), description="", idempotency_key=key()
    )
    for name, value in overrides.items():
        if name == "amount":
            req.amount.CopyFrom(value)
        else:
            setattr(req, name, value)
    return req


_CREATE_INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no order id", {"order_id": ""}, "MISSING_FIELD"),
    ("blank order id", {"order_id": "   "}, "MISSING_FIELD"),
    ("long order id", {"order_id": "A" * 65}, "FIELD_TOO_LONG"),
    ("order id control", {"order_id": "A\nB"}, "INVALID_CHARACTERS"),
    ("order id NUL", {"order_id": "A\x00B"}, "INVALID_CHARACTERS"),
    ("long description", {"description": "d" * 201}, "FIELD_TOO_LONG"),
    ("description control", {"description": "x\x7f"}, "INVALID_CHARACTERS"),
    ("zero", {"amount": money(0)}, "INVALID_AMOUNT"),
    ("negative", {"amount": money(-100)}, "INVALID_AMOUNT"),
    ("int64 min", {"amount": money(-(2**63))}, "AMOUNT_TOO_LARGE"),
    ("over max payment", {"amount": money(10**10 + 1)}, "AMOUNT_TOO_LARGE"),
    ("absurd", {"amount": money(2**63 - 1)}, "AMOUNT_TOO_LARGE"),
    ("no amount", {"amount": c.Money()}, "MISSING_FIELD"),
    ("no currency", {"amount": c.Money(amount_minor=100)}, "MISSING_FIELD"),
    ("unknown currency", {"amount": money(100, "XXX")}, "UNKNOWN_CURRENCY"),
    ("lower-case currency", {"amount": money(100, "eur")}, "UNKNOWN_CURRENCY"),
    ("long currency", {"amount": money(100, "EURO" * 50)}, "UNKNOWN_CURRENCY"),
    ("other currency", {"amount": money(100, "USD")}, "CURRENCY_MISMATCH"),
    ("negative expiry", {"expires_in_seconds": -1}, "INVALID_EXPIRY"),
    ("short expiry", {"expires_in_seconds": 29}, "INVALID_EXPIRY"),
    ("long expiry", {"expires_in_seconds": 24 * 3600 + 1}, "INVALID_EXPIRY"),
    ("int32 expiry", {"expires_in_seconds": 2**31 - 1}, "INVALID_EXPIRY"),
    ("no key", {"idempotency_key": ""}, "IDEMPOTENCY_KEY_REQUIRED"),
    ("key with space", {"idempotency_key": "a b"}, "INVALID_IDEMPOTENCY_KEY"),
    ("key too long", {"idempotency_key": "k" * 129}, "INVALID_IDEMPOTENCY_KEY"),
    ("key non-ascii", {"idempotency_key": "ключ"}, "INVALID_IDEMPOTENCY_KEY"),
]


@pytest.mark.parametrize(
    "overrides,reason",
    [(o, r) for _, o, r in _CREATE_INVALID],
    ids=[n for n, _, _ in _CREATE_INVALID],
)
def test_create_payment_rejects_bad_input(
    shop: MerchantClient, overrides: dict[str, Any], reason: str
) -> None:
    seq = shop.last_seq()
    count = len(shop.all_payments())
    expect(INVALID, reason, shop.stub.CreatePayment, _create(**overrides))
    assert shop.last_seq() == seq
    assert len(shop.all_payments()) == count


def test_create_payment_boundaries_are_accepted(api: Api) -> None:
    mer = api.merchant()
    assert mer.create(1, expires_in_seconds=30).amount.amount_minor == 1
    assert mer.create(10**10, expires_in_seconds=24 * 3600).amount.amount_minor == 10**10
    assert mer.create(5, order_id="O" * 64, description="d" * 200).order_id == "O" * 64


def test_get_payment_errors(api: Api, shop: MerchantClient) -> None:
    other = api.merchant(name="Other Shop")
    theirs = other.create(700)
    expect(INVALID, "INVALID_PAYMENT_ID", shop.get, "")
    expect(INVALID, "INVALID_PAYMENT_ID", shop.get, "nope")
    expect(INVALID, "INVALID_PAYMENT_ID", shop.get, theirs.id.replace("pay_", "ref_"))
    expect(INVALID, "INVALID_PAYMENT_ID", shop.get, theirs.id + "X")
    expect(NOT_FOUND, "PAYMENT_NOT_FOUND", shop.get, "pay_" + "0" * 26)
    # Another merchant's payment is as good as absent.
    expect(NOT_FOUND, "PAYMENT_NOT_FOUND", shop.get, theirs.id)
    assert other.get(theirs.id).id == theirs.id


# -- CancelPayment -------------------------------------------------------------------------


def test_cancel_payment(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    p = mer.create(900)
    quote = con.resolve(p.qr_payload)  # taken before the cancel
    canceled = mer.cancel(p.id)
    assert status_name(canceled) == "CANCELED"
    assert mer.get(p.id) == canceled

    # The consumer is told plainly; paying the old quote fails; nothing is charged.
    q2 = con.resolve(p.qr_payload)
    assert not q2.payable and q2.quote_id == ""
    assert [wn.code for wn in q2.warnings] == ["PAYMENT_CANCELED"]
    expect(PRECONDITION, "PAYMENT_CANCELED", con.pay_quote, quote.quote_id)
    assert con.balance_minor() == 100_00

    # Canceling twice (a new request, not a replay) is an invalid transition.
    expect(PRECONDITION, "INVALID_TRANSITION", mer.cancel, p.id)
    events = mer.events(until_count=2, timeout=3)
    assert [type_name(e) for e in events] == ["CREATED", "CANCELED"]


def test_cancel_errors(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    paid = mer.create(300)
    con.pay(paid.qr_payload)
    expect(PRECONDITION, "PAYMENT_ALREADY_PAID", mer.cancel, paid.id)

    expiring = mer.create(300, expires_in_seconds=30)
    psp.clock.advance(timedelta(seconds=31))
    expect(PRECONDITION, "PAYMENT_EXPIRED", mer.cancel, expiring.id)

    other = api.merchant()
    expect(NOT_FOUND, "PAYMENT_NOT_FOUND", other.cancel, paid.id)
    expect(INVALID, "INVALID_PAYMENT_ID", mer.cancel, "pay_123")
    req = m.CancelPaymentRequest(payment_id=paid.id)
    expect(INVALID, "IDEMPOTENCY_KEY_REQUIRED", mer.stub.CancelPayment, req)


# -- pay twice, expiry -------------------------------------------------------------------


def test_pay_twice_is_refused(api: Api) -> None:
    mer = api.merchant()
    first, second = api.consumer(), api.consumer()
    p = mer.create(1500)
    late_quote = second.resolve(p.qr_payload)
    quote = first.resolve(p.qr_payload)
    receipt = first.pay_quote(quote.quote_id)
    assert receipt.payment_id == p.id

    expect(PRECONDITION, "PAYMENT_ALREADY_PAID", second.pay_quote, late_quote.quote_id)
    # Paying again (a new request, not a replay) with the same quote is refused too.
    expect(PRECONDITION, "PAYMENT_ALREADY_PAID", first.pay_quote, quote.quote_id)
    q = second.resolve(p.qr_payload)
    assert not q.payable and [wn.code for wn in q.warnings] == ["PAYMENT_ALREADY_PAID"]
    assert second.balance_minor() == 100_00
    assert first.balance_minor() == 100_00 - 1500


def test_expired_payment(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    p = mer.create(800, expires_in_seconds=30)
    quote = con.resolve(p.qr_payload)
    assert ts_dt(quote.expires_at) <= ts_dt(p.expires_at)  # no quote outlives its QR
    psp.clock.advance(timedelta(seconds=31))

    # Shown EXPIRED at once, even before the sweeper records it.
    assert status_name(mer.get(p.id)) == "EXPIRED"
    q = con.resolve(p.qr_payload)
    assert not q.payable and [wn.code for wn in q.warnings] == ["PAYMENT_EXPIRED"]
    expect(PRECONDITION, "QUOTE_EXPIRED", con.pay_quote, quote.quote_id)
    assert con.balance_minor() == 100_00

    # The sweeper records it and the terminal is told over its stream.
    events = mer.events(until_count=2, timeout=5)
    assert [(type_name(e), e.payment.id) for e in events] == [
        ("CREATED", p.id),
        ("EXPIRED", p.id),
    ]
    assert status_name(events[1].payment) == "EXPIRED"
    assert [status_name(x) for x in mer.all_payments()] == ["EXPIRED"]


# -- RefundPayment -------------------------------------------------------------------------


def test_refunds_partial_several_full(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer(balance_minor=50_00)
    p = mer.create(999)  # fee: 1% of 9.99 = 0.0999 -> 0.10, rounded half up
    con.pay(p.qr_payload)
    paid = mer.get(p.id)
    assert paid.fee == money(10)
    assert con.balance_minor() == 50_00 - 999
    assert mer.balance_minor() == 999 - 10

    r1 = mer.refund(p.id, 333, reason="one croissant was stale")
    assert status_name(r1) == "PARTIALLY_REFUNDED"
    assert r1.refunded == money(333)
    assert [(r.amount.amount_minor, r.reason) for r in r1.refunds] == [
        (333, "one croissant was stale")
    ]
    assert con.balance_minor() == 50_00 - 999 + 333
    assert mer.balance_minor() == 999 - 10 - 333 + 3  # 3 of the 10 fee come back

    r2 = mer.refund(p.id, 333)
    assert status_name(r2) == "PARTIALLY_REFUNDED" and r2.refunded == money(666)
    assert mer.balance_minor() == 999 - 10 - 666 + 6

    expect(PRECONDITION, "REFUND_EXCEEDS_CAPTURED", mer.refund, p.id, 334)
    r3 = mer.refund(p.id, 333)
    assert status_name(r3) == "REFUNDED" and r3.refunded == money(999)
    assert len(r3.refunds) == 3 and len({r.id for r in r3.refunds}) == 3
    # Fully refunded: the payer has everything back, the merchant nothing, and the
    # whole fee was given back (no minor unit lost to rounding).
    assert con.balance_minor() == 50_00
    assert mer.balance_minor() == 0
    expect(PRECONDITION, "PAYMENT_NOT_REFUNDABLE", mer.refund, p.id, 1)
    assert mer.get(p.id) == r3

    kinds = [
        (t.kind, t.amount.amount_minor)
        for t in con.stub.ListTransactions(w.ListTransactionsRequest()).transactions
    ]
    assert kinds[:4] == [(2, 333), (2, 333), (2, 333), (1, -999)]
    events = mer.events(until_count=5, timeout=3)
    assert [type_name(e) for e in events] == [
        "CREATED",
        "SUCCEEDED",
        "REFUNDED",
        "REFUNDED",
        "REFUNDED",
    ]
    assert status_name(events[-1].payment) == "REFUNDED"
    assert psp.app.admin.ledger_check() == []


def test_refund_errors(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    pending = mer.create(400)
    expect(PRECONDITION, "PAYMENT_NOT_REFUNDABLE", mer.refund, pending.id, 100)

    p = mer.create(1000)
    con.pay(p.qr_payload)
    seq = mer.last_seq()

    def refund(**kw: Any) -> c.Payment:
        req = m.RefundPaymentRequest(payment_id=p.id, amount=money(100), idempotency_key=key())
        for k, v in kw.items():
            if k == "amount":
                req.amount.CopyFrom(v)
            else:
                setattr(req, k, v)
        return mer.stub.RefundPayment(req)

    expect(INVALID, "INVALID_AMOUNT", refund, amount=money(0))
    expect(INVALID, "INVALID_AMOUNT", refund, amount=money(-5))
    expect(INVALID, "AMOUNT_TOO_LARGE", refund, amount=money(10**12))
    expect(INVALID, "UNKNOWN_CURRENCY", refund, amount=money(100, "ABC"))
    expect(INVALID, "MISSING_FIELD", refund, amount=c.Money(amount_minor=100))
    expect(INVALID, "CURRENCY_MISMATCH", refund, amount=money(100, "USD"))
    expect(INVALID, "FIELD_TOO_LONG", refund, reason="r" * 201)
    expect(INVALID, "INVALID_CHARACTERS", refund, reason="bad\x00reason")
    expect(INVALID, "IDEMPOTENCY_KEY_REQUIRED", refund, idempotency_key="")
    expect(INVALID, "INVALID_PAYMENT_ID", refund, payment_id="x")
    expect(PRECONDITION, "REFUND_EXCEEDS_CAPTURED", refund, amount=money(1001))
    expect(NOT_FOUND, "PAYMENT_NOT_FOUND", refund, payment_id="pay_" + "1" * 26)
    other = api.merchant()
    expect(
        NOT_FOUND,
        "PAYMENT_NOT_FOUND",
        other.stub.RefundPayment,
        m.RefundPaymentRequest(payment_id=p.id, amount=money(100), idempotency_key=key()),
    )
    # Nothing moved.
    assert mer.last_seq() == seq
    assert mer.get(p.id).refunded == money(0)
    assert con.balance_minor() == 100_00 - 1000
    assert psp.app.admin.ledger_check() == []


# -- ListPayments --------------------------------------------------------------------------


def test_list_payments_paging_and_filters(api: Api) -> None:
    mer = api.merchant()
    con = api.consumer()
    made = [mer.create(100 + i, order_id=f"LIST-{i}") for i in range(5)]
    con.pay(made[1].qr_payload)
    con.pay(made[3].qr_payload)

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = mer.stub.ListPayments(m.ListPaymentsRequest(page_size=2, page_token=token))
        assert len(page.payments) <= 2
        seen.extend(p.id for p in page.payments)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert seen == [p.id for p in reversed(made)]  # newest first

    ok = mer.all_payments(statuses=[c.PAYMENT_STATUS_SUCCEEDED])
    assert {p.id for p in ok} == {made[1].id, made[3].id}
    assert all(status_name(p) == "SUCCEEDED" for p in ok)
    pending = mer.all_payments(statuses=[c.PAYMENT_STATUS_PENDING, c.PAYMENT_STATUS_CANCELED])
    assert {p.id for p in pending} == {made[0].id, made[2].id, made[4].id}
    assert [p.id for p in mer.all_payments(order_id="LIST-2")] == [made[2].id]
    assert mer.all_payments(order_id="NO-SUCH-ORDER") == []
    assert len(mer.all_payments(method=c.PAYMENT_METHOD_QR_DYNAMIC)) == 5
    assert mer.all_payments(method=c.PAYMENT_METHOD_QR_STATIC) == []

    start = made[0].created_at
    assert {p.id for p in mer.all_payments(created_from=start)} == {p.id for p in made}
    assert mer.all_payments(created_to=start) == []
    # Another merchant sees none of these.
    assert api.merchant().all_payments() == []


def test_list_payments_errors(shop: MerchantClient) -> None:
    def lst(**kw: Any) -> Any:
        return shop.stub.ListPayments(m.ListPaymentsRequest(**kw))

    expect(INVALID, "INVALID_PAGE_SIZE", lst, page_size=201)
    expect(INVALID, "INVALID_PAGE_SIZE", lst, page_size=-1)
    expect(INVALID, "INVALID_PAGE_TOKEN", lst, page_token="garbage!")
    expect(INVALID, "INVALID_PAGE_TOKEN", lst, page_token="bm90fGFwYXltZW50")  # "not|apayment"
    expect(INVALID, "INVALID_PAGE_TOKEN", lst, page_token="é" * 20)
    expect(INVALID, "INVALID_STATUS", lst, statuses=[c.PAYMENT_STATUS_UNSPECIFIED])
    expect(INVALID, "INVALID_STATUS", lst, statuses=[99])
    expect(INVALID, "INVALID_METHOD", lst, method=42)
    expect(INVALID, "FIELD_TOO_LONG", lst, order_id="o" * 65)
    expect(INVALID, "INVALID_CHARACTERS", lst, order_id="o\x00")
    expect(INVALID, "INVALID_TIMESTAMP", lst, created_from=Timestamp(seconds=2**62))
    expect(INVALID, "INVALID_TIMESTAMP", lst, created_to=Timestamp(seconds=-(2**62)))
    expect(INVALID, "INVALID_TIMESTAMP", lst, created_from=Timestamp(seconds=0, nanos=-1))
    assert lst(page_size=200).next_page_token == ""


# -- GetStaticQr -------------------------------------------------------------------------


def test_get_static_qr(api: Api, psp: LivePsp) -> None:
    mer = api.merchant(name="Kiosk am Park", label="Till 7")
    sq = mer.stub.GetStaticQr(m.GetStaticQrRequest())
    assert (sq.merchant_name, sq.terminal_label) == ("Kiosk am Park", "Till 7")
    parsed = qr.parse(sq.qr_payload)
    assert parsed.scheme == "SCANPAY" and parsed.initiation == "static"
    assert parsed.amount_text is None and parsed.currency == "EUR"
    assert parsed.terminal_label == "TILL 7"
    assert sq.pay_url.endswith("/p/" + (parsed.scanpay_token or "-"))
    # Stable: the printed sticker does not change between calls.
    assert mer.stub.GetStaticQr(m.GetStaticQrRequest()) == sq


# -- GetDailySummary ---------------------------------------------------------------------


def test_daily_summary_totals(api: Api) -> None:
    mer = api.merchant()
    con = api.consumer()
    a = mer.create(1000)
    b = mer.create(2500)
    mer.create(7000)  # never paid: not counted
    con.pay(a.qr_payload)
    con.pay(b.qr_payload)
    mer.refund(a.id, 500)
    day = ts_dt(mer.get(a.id).paid_at).date().isoformat()

    s = mer.stub.GetDailySummary(m.GetDailySummaryRequest(date=day))
    assert s.date == day
    assert (s.payment_count, s.refund_count) == (2, 1)
    assert s.gross == money(3500)
    assert s.refunds == money(500)
    assert s.fees == money(10 + 25 - 5)
    assert s.net == money(3500 - 500 - 30)
    assert [(t.method, t.count, t.gross.amount_minor) for t in s.totals] == [
        (c.PAYMENT_METHOD_QR_DYNAMIC, 2, 3500)
    ]
    # Empty date means today (the server's clock); another day is empty but well formed.
    today = mer.stub.GetDailySummary(m.GetDailySummaryRequest())
    assert today.date == day or today.payment_count == 0
    empty = mer.stub.GetDailySummary(m.GetDailySummaryRequest(date="2001-02-03"))
    assert (empty.payment_count, empty.gross, empty.net) == (0, money(0), money(0))


@pytest.mark.parametrize(
    "date", ["yesterday", "2026-13-01", "2026-02-30", "26-01-01", "9999-12-31", "0001-01-01", "²"]
)
def test_daily_summary_bad_date(shop: MerchantClient, date: str) -> None:
    expect(INVALID, "INVALID_DATE", shop.stub.GetDailySummary, m.GetDailySummaryRequest(date=date))


# -- card rail -----------------------------------------------------------------------------

_CARD_RPCS: list[tuple[str, Callable[[], Any]]] = [
    (
        "SwipeCard",
        lambda: m.SwipeCardRequest(
            track_data="%B4111111111111111^DOE/JOHN^30121010000000000000?",
            amount=money(100),
            order_id="CARD-1",
            action=m.CARD_ACTION_SALE,
            idempotency_key=key(),
        ),
    ),
    ("CapturePayment", lambda: m.CapturePaymentRequest(payment_id="pay_" + "0" * 26)),
    ("VoidPayment", lambda: m.VoidPaymentRequest(payment_id="pay_" + "0" * 26)),
    ("CloseBatch", lambda: m.CloseBatchRequest(idempotency_key=key())),
]


@pytest.mark.parametrize("rpc,make", _CARD_RPCS, ids=[r for r, _ in _CARD_RPCS])
def test_card_rpcs_are_unimplemented(shop: MerchantClient, rpc: str, make: Any) -> None:
    expect(grpc.StatusCode.UNIMPLEMENTED, "CARD_RAIL_UNAVAILABLE", getattr(shop.stub, rpc), make())
