"""Garbage into every RPC (hypothesis): whatever the field values, metadata or even the
raw request bytes, the answer is a clear status with an ErrorInfo reason, never UNKNOWN or
INTERNAL, and a call that fails leaves nothing behind (no payment, event, ledger entry,
balance change, idempotency record, session)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import wallet_pb2 as w
from tests.api.helpers import (
    FORBIDDEN_CODES,
    INVALID,
    Api,
    ConsumerClient,
    MerchantClient,
    api_for,
    bearer,
    error_info,
    expect,
    key,
)
from tests.support.psp import LivePsp

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_COUNTS = text(
    "SELECT "
    + ", ".join(
        f"(SELECT count(*) FROM {t})"
        for t in (
            "payments",
            "events",
            "journal_entries",
            "postings",
            "idempotency_records",
            "wallet_activity",
            "consumers",
            "refresh_tokens",
            "accounts",
        )
    )
    + ", (SELECT coalesce(sum(spent_minor), 0) FROM daily_spend)"
    + ", (SELECT coalesce(sum(failed_logins), 0) FROM consumers)"
    + ", (SELECT coalesce(sum(balance_minor), 0) FROM accounts WHERE type = 'wallet')"
)


@dataclass
class World:
    psp: LivePsp
    api: Api
    mer: MerchantClient
    con: ConsumerClient
    paid_id: str
    pending_id: str
    dynamic: str
    static: str
    quote_id: str
    state: tuple[int, ...] = ()

    def snapshot(self) -> tuple[int, ...]:
        row = self.psp.app.db.read_sync(lambda s: s.conn.execute(_COUNTS).one())
        return tuple(int(v) for v in row)

    def check(self, call: Callable[[], Any]) -> None:
        """Run one call: OK moves the baseline; an error must be clean and change nothing."""
        before = self.snapshot()
        try:
            call()
        except grpc.RpcError as exc:
            code = exc.code()
            assert code not in FORBIDDEN_CODES, (code, exc.details())
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:  # a stream left open: fine
                return
            info = error_info(exc)
            assert info is not None and info.reason, (code, exc.details())
            assert self.snapshot() == before, f"{info.reason} left state behind"


@pytest.fixture(scope="module")
def world(psp: LivePsp) -> Iterator[World]:
    with api_for(psp) as api:
        mer = api.merchant(name="Fuzz Shop")
        con = api.consumer(balance_minor=1_000_00)
        paid = mer.create(10_00)
        con.pay(paid.qr_payload)
        pending = mer.create(5_00)
        static = mer.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload
        quote = con.resolve(pending.qr_payload).quote_id
        yield World(psp, api, mer, con, paid.id, pending.id, pending.qr_payload, static, quote)
        assert psp.app.admin.ledger_check() == []


# -- strategies ----------------------------------------------------------------------------

_ODD = [
    "",
    " ",
    "\x00",
    "\n",
    "é",
    "²",
    "١٢",
    "💸",
    "\u202e",
    "-1",
    "0",
    "9" * 30,
    "NaN",
    "1e308",
    "' OR 1=1 --",
    "%s%n",
    "A" * 129,
    "x" * 600,
    "pay_" + "0" * 26,
    "txn_" + "Z" * 26,
    "q1.e30.x",
    "2026-01-15",
    "upi://pay?pa=a@b",
    "upi://[pay",
]
texts = st.one_of(
    st.sampled_from(_ODD),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), max_size=20),
    st.text(min_size=100, max_size=700),
)
int64 = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 10**10, 10**10 + 1, 10**15, 2**63 - 1, -(2**63)]),
    st.integers(-1000, 100_000),
)
int32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-5, 100_000))
currencies = st.one_of(
    st.sampled_from(["EUR", "USD", "JPY", "KWD", "", "eur", "XXX", "EURO", "€", "978"]),
    st.text(max_size=5),
)
moneys = st.one_of(st.none(), st.builds(c.Money, amount_minor=int64, currency=currencies))
keys = st.one_of(st.builds(key), texts)
enum_values = st.one_of(st.integers(-5, 15), st.integers(-(2**31), 2**31 - 1))
timestamps = st.one_of(
    st.none(),
    st.builds(
        Timestamp,
        seconds=st.integers(-(2**63), 2**63 - 1) | st.integers(-(10**11), 10**11),
        nanos=st.integers(-(2**31), 2**31 - 1) | st.integers(0, 999_999_999),
    ),
)


def _money_kw(amount: c.Money | None) -> dict[str, Any]:
    return {} if amount is None else {"amount": amount}


# -- merchant RPCs ---------------------------------------------------------------------------


@FUZZ
@given(order_id=texts, amount=moneys, description=texts, expires=int32, idem=keys)
def test_fuzz_create_payment(
    world: World, order_id: str, amount: Any, description: str, expires: int, idem: str
) -> None:
    req = m.CreatePaymentRequest(
        order_id=order_id,
        description=description,
        expires_in_seconds=expires,
        idempotency_key=idem,
        **_money_kw(amount),
    )
    world.check(lambda: world.mer.stub.CreatePayment(req))


@FUZZ
@given(payment_id=st.one_of(texts, st.just("")), idem=keys, which=st.integers(0, 2))
def test_fuzz_get_and_cancel_payment(world: World, payment_id: str, idem: str, which: int) -> None:
    pid = [payment_id, world.paid_id, world.pending_id][which]
    world.check(lambda: world.mer.stub.GetPayment(m.GetPaymentRequest(payment_id=pid)))
    world.check(
        lambda: world.mer.stub.CancelPayment(
            m.CancelPaymentRequest(payment_id=payment_id, idempotency_key=idem)
        )
    )


@FUZZ
@given(
    page_size=int32,
    page_token=texts,
    statuses=st.lists(enum_values, max_size=4),
    created_from=timestamps,
    created_to=timestamps,
    order_id=texts,
    method=enum_values,
)
def test_fuzz_list_payments(
    world: World,
    page_size: int,
    page_token: str,
    statuses: list[int],
    created_from: Timestamp | None,
    created_to: Timestamp | None,
    order_id: str,
    method: int,
) -> None:
    req = m.ListPaymentsRequest(
        page_size=page_size,
        page_token=page_token,
        statuses=statuses,
        order_id=order_id,
        method=method,
    )
    if created_from is not None:
        req.created_from.CopyFrom(created_from)
    if created_to is not None:
        req.created_to.CopyFrom(created_to)
    world.check(lambda: world.mer.stub.ListPayments(req))


@FUZZ
@given(payment_id=texts, amount=moneys, reason=texts, idem=keys, on_paid=st.booleans())
def test_fuzz_refund_payment(
    world: World, payment_id: str, amount: Any, reason: str, idem: str, on_paid: bool
) -> None:
    req = m.RefundPaymentRequest(
        payment_id=world.paid_id if on_paid else payment_id,
        reason=reason,
        idempotency_key=idem,
        **_money_kw(amount),
    )
    world.check(lambda: world.mer.stub.RefundPayment(req))


@FUZZ
@given(date=st.one_of(texts, st.dates().map(lambda d: d.isoformat())), cursor=texts)
def test_fuzz_summary_and_watch(world: World, date: str, cursor: str) -> None:
    world.check(lambda: world.mer.stub.GetDailySummary(m.GetDailySummaryRequest(date=date)))
    world.check(lambda: world.mer.events(after_cursor=cursor, until_count=1, timeout=0.3))


@FUZZ
@given(track=texts, amount=moneys, order_id=texts, action=enum_values, idem=keys)
def test_fuzz_card_rpcs(
    world: World, track: str, amount: Any, order_id: str, action: int, idem: str
) -> None:
    stub = world.mer.stub
    world.check(
        lambda: stub.SwipeCard(
            m.SwipeCardRequest(
                track_data=track,
                order_id=order_id,
                action=action,
                idempotency_key=idem,
                **_money_kw(amount),
            )
        )
    )
    world.check(
        lambda: stub.CapturePayment(
            m.CapturePaymentRequest(payment_id=order_id, idempotency_key=idem, **_money_kw(amount))
        )
    )
    world.check(lambda: stub.VoidPayment(m.VoidPaymentRequest(payment_id=track)))
    world.check(lambda: stub.CloseBatch(m.CloseBatchRequest(idempotency_key=idem)))


# -- wallet RPCs -----------------------------------------------------------------------------

emails = st.one_of(
    texts,
    st.emails().map(str),
    st.builds(lambda a, b: f"{a}@{b}.com", st.text(max_size=10), st.text(max_size=10)),
)


@settings(FUZZ, max_examples=25)
@given(email=emails, password=texts, currency=currencies, name=texts)
def test_fuzz_register(world: World, email: str, password: str, currency: str, name: str) -> None:
    req = w.RegisterRequest(email=email, password=password, currency=currency, display_name=name)
    world.check(lambda: world.api.raw_wallet().Register(req, timeout=15))


@settings(FUZZ, max_examples=8)  # every Login costs an argon2 verification (~0.1 s)
@given(email=emails, password=texts)
def test_fuzz_login(world: World, email: str, password: str) -> None:
    req = w.LoginRequest(email=email, password=password)
    world.check(lambda: world.api.raw_wallet().Login(req, timeout=15))


@FUZZ
@given(token=texts)
def test_fuzz_refresh(world: World, token: str) -> None:
    req = w.RefreshRequest(refresh_token=token)
    world.check(lambda: world.api.raw_wallet().Refresh(req, timeout=15))


@FUZZ
@given(amount=moneys, idem=keys, page_size=int32, page_token=texts)
def test_fuzz_top_up_and_lists(
    world: World, amount: Any, idem: str, page_size: int, page_token: str
) -> None:
    stub = world.con.stub
    world.check(lambda: stub.TopUp(w.TopUpRequest(idempotency_key=idem, **_money_kw(amount))))
    world.check(
        lambda: stub.ListTransactions(
            w.ListTransactionsRequest(page_size=page_size, page_token=page_token)
        )
    )
    world.check(lambda: stub.GetBalance(w.GetBalanceRequest()))


def _mutations(world_payloads: list[str]) -> st.SearchStrategy[str]:
    """Real payloads, cut, extended or with one character changed."""

    def mutate(payload: str, i: int, ch: str, how: int) -> str:
        i %= len(payload) + 1
        return [
            payload[:i] + ch + payload[i + 1 :],
            payload[:i],
            payload[:i] + ch + payload[i:],
            payload + ch * (i % 50),
        ][how]

    return st.builds(
        mutate,
        st.sampled_from(world_payloads),
        st.integers(0, 200),
        st.characters(codec="utf-8"),  # what a client can put in a string field
        st.integers(0, 3),
    )


@FUZZ
@given(data=st.data(), amount=moneys)
def test_fuzz_resolve_qr(world: World, data: st.DataObject, amount: Any) -> None:
    payload = data.draw(
        st.one_of(texts, _mutations([world.dynamic, world.static]), st.just(world.static))
    )
    req = w.ResolveQrRequest(payload=payload, **_money_kw(amount))
    world.check(lambda: world.con.stub.ResolveQr(req))


@FUZZ
@given(data=st.data(), amount=moneys, reference=texts, idem=keys)
def test_fuzz_pay(
    world: World, data: st.DataObject, amount: Any, reference: str, idem: str
) -> None:
    q = world.quote_id
    quote_id = data.draw(
        st.one_of(
            st.just(""),
            texts,
            st.builds(
                lambda i, ch: q[: i % len(q)] + ch + q[i % len(q) + 1 :],
                st.integers(0, 400),
                st.characters(codec="utf-8"),
            ),
        )
    )
    payload = data.draw(st.one_of(st.just(""), texts, _mutations([world.static, world.dynamic])))
    req = w.PayRequest(
        quote_id=quote_id,
        payload=payload,
        reference=reference,
        idempotency_key=idem,
        **_money_kw(amount),
    )
    world.check(lambda: world.con.stub.Pay(req))


# -- metadata and raw bytes ----------------------------------------------------------------

_MERCHANT_RPCS = [
    (name, m.DESCRIPTOR.services_by_name["MerchantService"].methods_by_name[name])
    for name in m.DESCRIPTOR.services_by_name["MerchantService"].methods_by_name
]
_WALLET_RPCS = [
    (name, w.DESCRIPTOR.services_by_name["WalletService"].methods_by_name[name])
    for name in w.DESCRIPTOR.services_by_name["WalletService"].methods_by_name
]
_ALL_PATHS = [
    (f"/scanpay.v1.{service}/{name}", method.server_streaming)
    for service, rpcs in (("MerchantService", _MERCHANT_RPCS), ("WalletService", _WALLET_RPCS))
    for name, method in rpcs
]
_FIRST_FIELD_IS_TEXT = {
    f"/scanpay.v1.{service}/{name}": (
        method.input_type.fields_by_number.get(1) is not None
        and method.input_type.fields_by_number[1].type == FieldDescriptor.TYPE_STRING
    )
    for service, rpcs in (("MerchantService", _MERCHANT_RPCS), ("WalletService", _WALLET_RPCS))
    for name, method in rpcs
}
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=120).map(
        lambda s: "Bearer " + s
    ),
    st.sampled_from(["Bearer", "Bearer sk_", "Bearer sk_0123456789_", "Bearer q1.a.b", "bearer x"]),
)


def _raw_call(world: World, path: str, streaming: bool, body: bytes, md: Any) -> Any:
    ch = world.api.channel
    if streaming:
        call = ch.unary_stream(path)(body, metadata=md, timeout=0.3)
        try:
            return list(call)
        finally:
            call.cancel()
    return ch.unary_unary(path)(body, metadata=md, timeout=15)


@FUZZ
@given(value=header_values, which=st.sampled_from(_ALL_PATHS))
def test_fuzz_authorization_header(world: World, value: str, which: tuple[str, bool]) -> None:
    path, streaming = which
    if path.endswith(("/Register", "/Login", "/Refresh")):
        return  # open calls: no credential needed
    md = (("authorization", value),)
    try:
        _raw_call(world, path, streaming, b"", md)
    except grpc.RpcError as exc:
        info = error_info(exc)
        assert exc.code() is grpc.StatusCode.UNAUTHENTICATED, (exc.code(), exc.details())
        assert info is not None and info.reason
    else:
        raise AssertionError(f"{path} accepted authorization {value!r}")


@FUZZ
@given(body=st.binary(max_size=120), which=st.sampled_from(_ALL_PATHS))
def test_fuzz_raw_request_bytes(world: World, body: bytes, which: tuple[str, bool]) -> None:
    path, streaming = which
    if path.endswith("/Login"):
        return  # an argon2 verification each; covered by the explicit cases below
    md = bearer(world.mer.api_key if "MerchantService" in path else world.con.token)
    world.check(lambda: _raw_call(world, path, streaming, body, md))


@pytest.mark.parametrize(
    "path,streaming", _ALL_PATHS, ids=[p.rsplit("/", 1)[1] for p, _ in _ALL_PATHS]
)
def test_malformed_request_bytes(world: World, path: str, streaming: bool) -> None:
    md = bearer(world.mer.api_key if "MerchantService" in path else world.con.token)
    bodies = [
        b"\xff",  # not a wire-format tag
        b"\x0a\x05ab",  # field 1, length 5, only 2 bytes follow
        b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # an 11-byte varint
    ]
    if _FIRST_FIELD_IS_TEXT[path]:
        bodies.append(b"\x0a\x02\xc3\x28")  # field 1, a string, with invalid UTF-8
    for body in bodies:
        before = world.snapshot()
        expect(INVALID, "MALFORMED_REQUEST", _raw_call, world, path, streaming, body, md)
        assert world.snapshot() == before


def test_oversize_request_is_refused(world: World) -> None:
    """Over the server's 1 MiB receive limit grpc itself refuses the call (no ErrorInfo)."""
    before = world.snapshot()
    req = m.CreatePaymentRequest(
        order_id="BIG", amount=c.Money(amount_minor=100, currency="EUR"), idempotency_key=key()
    )
    req.description = "x" * (1 << 21)
    try:
        world.mer.stub.CreatePayment(req)
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        raise AssertionError("a 2 MiB request was accepted")
    assert world.snapshot() == before
    # Just under the limit the server answers itself, with a reason.
    req.description = "x" * 1000
    expect(INVALID, "FIELD_TOO_LONG", world.mer.stub.CreatePayment, req)
