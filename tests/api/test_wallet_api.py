"""WalletService over a real server on loopback (SQLite and PostgreSQL): sessions, balance,
top-ups, resolving any QR, paying (dynamic, static, cross-currency), limits, and every
error reason."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import wallet_pb2 as w
from psp_server.domain import qr
from psp_server.domain.money import Money
from psp_server.service import auth
from tests.api.helpers import (
    EXISTS,
    INVALID,
    NOT_FOUND,
    PASSWORD,
    PRECONDITION,
    UNAUTH,
    Api,
    MerchantClient,
    api_for,
    bearer,
    error_info,
    expect,
    key,
    money,
    near,
    raised,
    rpc_error,
    status_name,
    ts_dt,
    type_name,
    uid,
)
from tests.support.psp import LivePsp
from tests.unit.qr_vectors import PIX_BCB_STATIC, PROMPTPAY_PHONE, UPI_RAZORPAY


@pytest.fixture(scope="module")
def api(psp: LivePsp) -> Iterator[Api]:
    with api_for(psp) as a:
        yield a


@pytest.fixture(scope="module")
def shop(api: Api) -> MerchantClient:
    return api.merchant(name="Corner Bakery")


def _email() -> str:
    return f"w-{uid()}@example.com"


def _forge(payload: str, **changes: Any) -> str:
    """Our payload rebuilt with the same merchant code and token but other printed fields."""
    p = qr.parse(payload)
    fields: dict[str, Any] = dict(
        dynamic=p.initiation == "dynamic",
        merchant_code=p.scanpay_merchant_code,
        token=p.scanpay_token,
        mcc=p.mcc,
        amount=p.amount(),
        currency=p.currency,
        country=p.country,
        name=p.merchant_name,
        city=p.merchant_city,
    )
    fields.update(changes)
    return qr.encode_scanpay(**fields)


def _with_crc(body: str) -> str:
    """``body`` (ending in "6304") plus its CRC."""
    return body + f"{qr.crc16_ccitt_false(body.encode()):04X}"


def _tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def _scanpay_payload(token: str, poi: str = "12") -> str:
    account = _tlv("00", "SCANPAY") + _tlv("01", "ABC") + _tlv("02", token)
    body = (
        _tlv("00", "01")
        + _tlv("01", poi)
        + _tlv("26", account)
        + _tlv("52", "5462")
        + _tlv("53", "978")
        + _tlv("58", "DE")
        + _tlv("59", "X")
        + _tlv("60", "Y")
        + "6304"
    )
    return _with_crc(body)


# -- Register / Login / Refresh ----------------------------------------------------------


def test_register_login_refresh(api: Api, psp: LivePsp) -> None:
    stub = api.raw_wallet()
    email = _email()
    s = stub.Register(
        w.RegisterRequest(
            email="  " + email.upper() + " ",
            password="s3cret-enough",
            currency="EUR",
            display_name="Ana",
        ),
        timeout=10,
    )
    assert s.consumer.id.startswith("con_")
    assert (s.consumer.email, s.consumer.display_name) == (email, "Ana")
    assert (s.consumer.currency, s.consumer.kyc_tier) == ("EUR", 0)
    now = psp.clock.now()
    assert near(ts_dt(s.access_expires_at), now + timedelta(minutes=15))
    assert near(ts_dt(s.refresh_expires_at), now + timedelta(days=30))
    assert s.refresh_token.startswith("rt_") and s.access_token != s.refresh_token

    bal = api.raw_wallet().GetBalance(w.GetBalanceRequest(), metadata=bearer(s.access_token))
    assert bal.available == money(0) and bal.kyc_tier == 0
    assert bal.per_payment_limit == money(50_00) and bal.daily_limit == money(150_00)
    assert bal.spent_today == money(0)

    logged = stub.Login(w.LoginRequest(email=email, password="s3cret-enough"), timeout=10)
    assert logged.consumer == s.consumer
    assert logged.refresh_token != s.refresh_token

    # Rotation: a refresh token works once; its successor works; the old one never again.
    r1 = stub.Refresh(w.RefreshRequest(refresh_token=s.refresh_token), timeout=10)
    assert r1.consumer == s.consumer and r1.refresh_token != s.refresh_token
    expect(
        UNAUTH,
        "INVALID_REFRESH_TOKEN",
        stub.Refresh,
        w.RefreshRequest(refresh_token=s.refresh_token),
    )
    r2 = stub.Refresh(w.RefreshRequest(refresh_token=r1.refresh_token), timeout=10)
    stub.GetBalance(w.GetBalanceRequest(), metadata=bearer(r2.access_token))
    # The other session (from Login) is independent.
    stub.Refresh(w.RefreshRequest(refresh_token=logged.refresh_token), timeout=10)


@pytest.mark.parametrize(
    "token",
    ["", "rt_unknown", "x" * 201, "rt_" + "é" * 30],
    ids=["empty", "unknown", "too-long", "non-ascii"],
)
def test_refresh_rejects_bad_tokens(api: Api, token: str) -> None:
    expect(
        UNAUTH,
        "INVALID_REFRESH_TOKEN",
        api.raw_wallet().Refresh,
        w.RefreshRequest(refresh_token=token),
    )


def test_refresh_token_expires(api: Api, psp: LivePsp) -> None:
    con = api.consumer()
    s = api.raw_wallet().Login(w.LoginRequest(email=con.email, password=PASSWORD), timeout=10)
    psp.clock.advance(timedelta(days=30, seconds=1))
    expect(
        UNAUTH,
        "INVALID_REFRESH_TOKEN",
        api.raw_wallet().Refresh,
        w.RefreshRequest(refresh_token=s.refresh_token),
    )


_REGISTER_INVALID: list[tuple[str, dict[str, str], grpc.StatusCode, str]] = [
    ("no email", {"email": ""}, INVALID, "INVALID_EMAIL"),
    ("no at", {"email": "ana.example.com"}, INVALID, "INVALID_EMAIL"),
    ("two ats", {"email": "a@b@example.com"}, INVALID, "INVALID_EMAIL"),
    ("space", {"email": "an a@example.com"}, INVALID, "INVALID_EMAIL"),
    ("no tld", {"email": "ana@example"}, INVALID, "INVALID_EMAIL"),
    ("NUL", {"email": "a\x00b@example.com"}, INVALID, "INVALID_EMAIL"),
    ("control", {"email": "a\x01b@example.com"}, INVALID, "INVALID_EMAIL"),
    ("huge", {"email": "a" * 60 + "@" + "b" * 190 + ".com"}, INVALID, "INVALID_EMAIL"),
    ("short password", {"password": "1234567"}, INVALID, "WEAK_PASSWORD"),
    ("empty password", {"password": ""}, INVALID, "WEAK_PASSWORD"),
    ("long password", {"password": "p" * 129}, INVALID, "FIELD_TOO_LONG"),
    ("no currency", {"currency": ""}, INVALID, "UNKNOWN_CURRENCY"),
    ("bad currency", {"currency": "EURO"}, INVALID, "UNKNOWN_CURRENCY"),
    ("lower currency", {"currency": "eur"}, INVALID, "UNKNOWN_CURRENCY"),
    ("long name", {"display_name": "n" * 101}, INVALID, "FIELD_TOO_LONG"),
    ("name control", {"display_name": "Ana\x1b[31m"}, INVALID, "INVALID_CHARACTERS"),
]


@pytest.mark.parametrize(
    "fields,code,reason",
    [(f, cd, r) for _, f, cd, r in _REGISTER_INVALID],
    ids=[n for n, *_ in _REGISTER_INVALID],
)
def test_register_rejects_bad_input(
    api: Api, psp: LivePsp, fields: dict[str, str], code: grpc.StatusCode, reason: str
) -> None:
    req = w.RegisterRequest(email=_email(), password="long enough", currency="EUR")
    for k, v in fields.items():
        setattr(req, k, v)
    expect(code, reason, api.raw_wallet().Register, req, timeout=10)
    if fields.get("email") is None:  # the valid e-mail was not taken by the failed call
        expect(
            UNAUTH,
            "INVALID_CREDENTIALS",
            api.raw_wallet().Login,
            w.LoginRequest(email=req.email, password="long enough"),
        )


def test_register_email_taken(api: Api) -> None:
    con = api.consumer()
    for email in (con.email, con.email.upper(), f" {con.email} "):
        expect(
            EXISTS,
            "EMAIL_TAKEN",
            api.raw_wallet().Register,
            w.RegisterRequest(email=email, password="another one", currency="USD"),
            timeout=10,
        )


def test_login_errors_and_throttling(api: Api, psp: LivePsp) -> None:
    stub = api.raw_wallet()
    con = api.consumer()
    for req in (
        w.LoginRequest(email=f"nobody-{uid()}@example.com", password=PASSWORD),
        w.LoginRequest(email="", password=""),
        w.LoginRequest(email="x" * 300, password=PASSWORD),
        w.LoginRequest(email=con.email, password="p" * 500),
        w.LoginRequest(email="nul\x00@example.com", password=PASSWORD),
    ):
        expect(UNAUTH, "INVALID_CREDENTIALS", stub.Login, req, timeout=10)

    wrong = w.LoginRequest(email=con.email, password="wrong password")
    for _ in range(5):
        expect(UNAUTH, "INVALID_CREDENTIALS", stub.Login, wrong, timeout=10)
    # Locked for a while now, even with the right password.
    err = raised(stub.Login, w.LoginRequest(email=con.email, password=PASSWORD), timeout=10)
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(err)
    assert info is not None and info.reason == "LOGIN_THROTTLED"
    assert 1 <= int(info.metadata["retry_after_seconds"]) <= 31
    psp.clock.advance(timedelta(seconds=31))
    s = stub.Login(w.LoginRequest(email=con.email.upper(), password=PASSWORD), timeout=10)
    assert s.consumer.id == con.consumer_id


# -- access tokens -------------------------------------------------------------------------

_AUTHED: list[tuple[str, Any]] = [
    ("GetBalance", w.GetBalanceRequest()),
    ("TopUp", w.TopUpRequest(amount=money(100), idempotency_key="k")),
    ("ResolveQr", w.ResolveQrRequest(payload="x")),
    ("Pay", w.PayRequest(quote_id="q", idempotency_key="k")),
    ("ListTransactions", w.ListTransactionsRequest()),
]


@pytest.mark.parametrize("rpc,req", _AUTHED, ids=[r for r, _ in _AUTHED])
def test_every_wallet_rpc_needs_a_valid_token(
    api: Api, psp: LivePsp, shop: MerchantClient, rpc: str, req: Any
) -> None:
    con = api.consumer()
    method = getattr(api.raw_wallet(), rpc)
    secret = psp.app.settings.secret
    now = psp.clock.now()
    ttl = timedelta(minutes=15)
    refresh_claims = {"sub": con.consumer_id, "typ": "refresh", "exp": int(now.timestamp()) + 60}
    cases = [
        ((), "MISSING_CREDENTIALS"),
        ((("authorization", "Token abc"),), "INVALID_AUTH_HEADER"),
        ((("authorization", "bearer " + con.token),), "INVALID_AUTH_HEADER"),
        (bearer("garbage"), "INVALID_TOKEN"),
        (bearer("a.b.c"), "INVALID_TOKEN"),
        (bearer("x" * 2001), "INVALID_TOKEN"),
        (bearer(shop.api_key), "INVALID_TOKEN"),
        (
            bearer(
                auth.issue_access_token(
                    b"another secret, 32 bytes or more!", con.consumer_id, now, ttl
                )
            ),
            "INVALID_TOKEN",
        ),
        (bearer(jwt.encode(refresh_claims, secret, algorithm="HS256")), "INVALID_TOKEN"),
        (bearer(jwt.encode({"sub": con.consumer_id}, secret, algorithm="HS256")), "INVALID_TOKEN"),
        (bearer(con.token[:-3] + "AAA"), "INVALID_TOKEN"),
        (bearer(auth.issue_access_token(secret, con.consumer_id, now - ttl, ttl)), "TOKEN_EXPIRED"),
    ]
    for md, reason in cases:
        assert rpc_error(method, req, metadata=md, timeout=10) == (UNAUTH, reason), (md, reason)


def test_token_of_an_unknown_consumer(api: Api, psp: LivePsp) -> None:
    # Access tokens are stateless (signature + expiry); calls that load the consumer
    # refuse a genuine token whose consumer does not exist.
    s = psp.app.settings
    token = auth.issue_access_token(s.secret, "con_" + "0" * 26, psp.clock.now(), s.access_ttl)
    md = bearer(token)
    expect(UNAUTH, "INVALID_TOKEN", api.raw_wallet().GetBalance, w.GetBalanceRequest(), metadata=md)
    req = w.TopUpRequest(amount=money(100), idempotency_key=key())
    expect(UNAUTH, "INVALID_TOKEN", api.raw_wallet().TopUp, req, metadata=md)


def test_access_token_expires_then_refresh(api: Api, psp: LivePsp) -> None:
    stub = api.raw_wallet()
    con = api.consumer()
    s = stub.Login(w.LoginRequest(email=con.email, password=PASSWORD), timeout=10)
    md = bearer(s.access_token)
    assert stub.GetBalance(w.GetBalanceRequest(), metadata=md).available == money(100_00)
    psp.clock.advance(timedelta(minutes=16))
    expect(UNAUTH, "TOKEN_EXPIRED", stub.GetBalance, w.GetBalanceRequest(), metadata=md)
    fresh = stub.Refresh(w.RefreshRequest(refresh_token=s.refresh_token), timeout=10)
    got = stub.GetBalance(w.GetBalanceRequest(), metadata=bearer(fresh.access_token))
    assert got.available == money(100_00)


# -- GetBalance / TopUp --------------------------------------------------------------------


def test_balance_and_top_up(api: Api) -> None:
    con = api.consumer(balance_minor=0)
    b = con.balance()
    assert b.available == money(0) and b.kyc_tier == 2
    assert b.per_payment_limit == money(5_000_00) and b.daily_limit == money(20_000_00)
    after = con.stub.TopUp(w.TopUpRequest(amount=money(25_50), idempotency_key=key()))
    assert after.available == money(25_50)
    assert con.balance() == after
    txs = con.stub.ListTransactions(w.ListTransactionsRequest()).transactions
    assert [(t.kind, t.amount.amount_minor) for t in txs] == [(w.TRANSACTION_KIND_TOP_UP, 25_50)]


def test_top_up_errors(api: Api, psp: LivePsp) -> None:
    con = api.consumer(kyc_tier=0, balance_minor=200_00)  # tier 0 holds at most 250 EUR

    def top_up(amount: c.Money, idem: str | None = None) -> w.Balance:
        return con.stub.TopUp(
            w.TopUpRequest(amount=amount, idempotency_key=key() if idem is None else idem)
        )

    expect(INVALID, "INVALID_AMOUNT", top_up, money(0))
    expect(INVALID, "INVALID_AMOUNT", top_up, money(-1))
    expect(INVALID, "AMOUNT_TOO_LARGE", top_up, money(10**10 + 1))
    expect(INVALID, "AMOUNT_TOO_LARGE", top_up, money(-(2**63)))
    expect(INVALID, "UNKNOWN_CURRENCY", top_up, money(100, "ZZZ"))
    expect(INVALID, "MISSING_FIELD", top_up, c.Money(amount_minor=100))
    expect(INVALID, "CURRENCY_MISMATCH", top_up, money(100, "JPY"))
    expect(INVALID, "IDEMPOTENCY_KEY_REQUIRED", top_up, money(100), "")
    expect(INVALID, "INVALID_IDEMPOTENCY_KEY", top_up, money(100), "tab\tkey")
    err = raised(top_up, money(50_01))
    info = error_info(err)
    assert err.code() is PRECONDITION and info is not None
    assert (info.reason, info.metadata["limit"]) == ("LIMIT_EXCEEDED", "max_balance")
    assert top_up(money(50_00)).available == money(250_00)  # exactly the ceiling is fine
    assert con.balance_minor() == 250_00
    assert psp.app.admin.ledger_check() == []


# -- ResolveQr + Pay, dynamic ----------------------------------------------------------------


def test_resolve_and_pay_dynamic(api: Api, psp: LivePsp) -> None:
    mer = api.merchant(name="Corner Bakery", city="Berlin")
    con = api.consumer()
    p = mer.create(1250, order_id="ORDER-77", description="bread")
    now = psp.clock.now()
    q = con.resolve(p.qr_payload)
    assert q.payable and q.quote_id.startswith("q1.")
    assert (q.scheme, q.initiation) == ("SCANPAY", w.QR_INITIATION_DYNAMIC)
    assert q.merchant == w.VerifiedMerchant(
        id=mer.merchant_id, name="Corner Bakery", city="Berlin", country="DE", mcc="5462"
    )
    assert q.qr_merchant_name == "CORNER BAKERY"
    assert not q.amount_required
    assert q.amount == money(1250) and q.payer_amount == money(1250) and q.fx_rate == ""
    assert near(ts_dt(q.expires_at), now + timedelta(minutes=5))
    assert (q.payment_id, q.order_id, q.description) == (p.id, "ORDER-77", "bread")
    assert list(q.warnings) == []

    r = con.pay_quote(q.quote_id)
    assert r.transaction_id.startswith("txn_")
    assert (r.payment_id, r.merchant_name, r.order_id) == (p.id, "Corner Bakery", "ORDER-77")
    assert r.amount == money(1250) and r.payer_amount == money(1250) and r.fx_rate == ""
    assert r.balance_after == money(100_00 - 1250)
    assert con.balance().available == money(100_00 - 1250)

    paid = mer.get(p.id)
    assert status_name(paid) == "SUCCEEDED"
    assert paid.paid_at == r.paid_at
    assert paid.fee == money(13)  # 1% of 12.50, rounded half up
    assert not paid.HasField("fx")
    assert mer.balance_minor() == 1250 - 13
    tx = con.stub.ListTransactions(w.ListTransactionsRequest()).transactions[0]
    assert (tx.kind, tx.amount, tx.payment_id) == (w.TRANSACTION_KIND_PAYMENT, money(-1250), p.id)
    assert tx.merchant_name == "Corner Bakery"
    assert psp.app.admin.ledger_check() == []


def test_quote_warnings_name_and_amount_mismatch(api: Api) -> None:
    mer = api.merchant(name="Corner Bakery")
    con = api.consumer()
    p = mer.create(1250)
    # A sticker over the real code: the real token, but another shop's name and amount.
    forged = _forge(p.qr_payload, name="Evil Twin Shop", amount=Money(100, "EUR"))
    q = con.resolve(forged)
    assert q.payable
    assert q.merchant.name == "Corner Bakery"  # the registered name is the one to trust
    assert q.qr_merchant_name == "EVIL TWIN SHOP"
    assert q.amount == money(1250)  # the server's amount, not the printed one
    assert [wn.code for wn in q.warnings] == ["QR_NAME_MISMATCH", "QR_AMOUNT_MISMATCH"]
    assert "Corner Bakery" in q.warnings[0].message
    # A shortened but recognisable name is no mismatch.
    assert list(con.resolve(_forge(p.qr_payload, name="CORNER BAKER")).warnings) == []


@pytest.mark.parametrize(
    "payload,scheme",
    [(PIX_BCB_STATIC, "PIX"), (PROMPTPAY_PHONE, "PROMPTPAY"), (UPI_RAZORPAY, "UPI")],
    ids=["pix", "promptpay", "upi"],
)
def test_foreign_scheme_is_named_not_paid(api: Api, payload: str, scheme: str) -> None:
    con = api.consumer()
    q = con.resolve(payload)
    assert not q.payable and q.quote_id == ""
    assert q.scheme == scheme
    assert [wn.code for wn in q.warnings] == ["QR_FOREIGN_SCHEME"]
    assert qr.SCHEME_NAMES[scheme] in q.warnings[0].message
    assert not q.HasField("merchant")
    expect(
        PRECONDITION,
        "QR_FOREIGN_SCHEME",
        con.stub.Pay,
        w.PayRequest(payload=payload, amount=money(100), idempotency_key=key()),
    )
    assert con.balance_minor() == 100_00


def test_resolve_qr_errors(api: Api, shop: MerchantClient) -> None:
    con = api.consumer()
    real = shop.create(1000).qr_payload
    last = real[-1]
    bad_crc = real[:-1] + ("0" if last != "0" else "1")
    altered = real.replace("CORNER BAKERY", "CORNER BAKERZ")
    assert altered != real
    unknown = _forge(real, token="A" * 20)
    unknown_static = _forge(
        shop.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload, token="B" * 20
    )
    cases: list[tuple[str, grpc.StatusCode, str]] = [
        (bad_crc, INVALID, "QR_CRC_MISMATCH"),
        (altered, INVALID, "QR_CRC_MISMATCH"),
        (real[:-8], INVALID, "QR_CRC_MISSING"),
        (real[:-4], INVALID, "QR_CRC_MISSING"),
        ("", INVALID, "QR_MALFORMED"),
        ("   ", INVALID, "QR_MALFORMED"),
        ("0002010", INVALID, "QR_MALFORMED"),
        ("00020101021199", INVALID, "QR_MALFORMED"),
        ("hello world", INVALID, "QR_UNSUPPORTED_FORMAT"),
        ("https://pay.scanpay.example/p/ABC", INVALID, "QR_UNSUPPORTED_FORMAT"),
        (_with_crc("0002036304"), INVALID, "QR_UNSUPPORTED_FORMAT"),
        ("upi://collect?pa=x@y", INVALID, "QR_UNSUPPORTED_FORMAT"),
        ("upi://pay?pn=Nobody", INVALID, "QR_MALFORMED"),
        ("upi://[pay?pa=x", INVALID, "QR_MALFORMED"),
        ("0" * 513, INVALID, "QR_TOO_LONG"),
        (real + " " * 600, INVALID, "QR_TOO_LONG"),
        (unknown, NOT_FOUND, "QR_UNKNOWN"),
        (unknown_static, NOT_FOUND, "QR_UNKNOWN"),
        (_scanpay_payload("AB\x00CD"), NOT_FOUND, "QR_UNKNOWN"),
        (_scanpay_payload("ÄÖÜ"), NOT_FOUND, "QR_UNKNOWN"),
        (_scanpay_payload("Z" * 60, poi="11"), NOT_FOUND, "QR_UNKNOWN"),
    ]
    for payload, code, reason in cases:
        assert rpc_error(con.resolve, payload) == (code, reason), (payload, reason)


def test_resolve_paid_canceled_show_why(api: Api) -> None:
    mer = api.merchant()
    con = api.consumer()
    p = mer.create(300)
    con.pay(p.qr_payload)
    q = con.resolve(p.qr_payload)
    assert not q.payable and q.quote_id == "" and q.payment_id == p.id
    assert [wn.code for wn in q.warnings] == ["PAYMENT_ALREADY_PAID"]


# -- quotes --------------------------------------------------------------------------------


def test_quote_errors(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    alice, bob = api.consumer(), api.consumer()
    p = mer.create(1000)
    q = alice.resolve(p.qr_payload)
    body = q.quote_id.split(".")[1]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for quote_id in (
        "garbage",
        "q1.a.b",
        "q1..",
        "q2." + q.quote_id[3:],
        q.quote_id.replace(body, flipped),
        q.quote_id + "x",
        "q1.é.é",
        "q1.ab.☃",
        "q1." + "a" * 1000 + ".b",
    ):
        assert rpc_error(alice.pay_quote, quote_id) == (INVALID, "INVALID_QUOTE"), quote_id
    # A quote is for the consumer it was made for.
    expect(INVALID, "INVALID_QUOTE", bob.pay_quote, q.quote_id)
    assert status_name(mer.get(p.id)) == "PENDING"
    assert (alice.balance_minor(), bob.balance_minor()) == (100_00, 100_00)
    alice.pay_quote(q.quote_id)


def test_pay_errors(api: Api, shop: MerchantClient) -> None:
    con = api.consumer()
    static = shop.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload
    dynamic = shop.create(1000).qr_payload

    def pay(**kw: Any) -> w.Receipt:
        kw.setdefault("idempotency_key", key())
        return con.stub.Pay(w.PayRequest(**kw))

    expect(INVALID, "MISSING_FIELD", pay)
    expect(INVALID, "IDEMPOTENCY_KEY_REQUIRED", pay, quote_id="q", idempotency_key="")
    expect(INVALID, "INVALID_IDEMPOTENCY_KEY", pay, quote_id="q", idempotency_key="k" * 129)
    expect(INVALID, "QUOTE_REQUIRED", pay, payload=dynamic)
    expect(INVALID, "AMOUNT_REQUIRED", pay, payload=static)
    expect(INVALID, "INVALID_AMOUNT", pay, payload=static, amount=money(0))
    expect(INVALID, "INVALID_AMOUNT", pay, payload=static, amount=money(-10))
    expect(INVALID, "AMOUNT_TOO_LARGE", pay, payload=static, amount=money(2**62))
    expect(INVALID, "UNKNOWN_CURRENCY", pay, payload=static, amount=money(100, "XTS"))
    expect(INVALID, "CURRENCY_MISMATCH", pay, payload=static, amount=money(100, "USD"))
    expect(INVALID, "FIELD_TOO_LONG", pay, payload=static, amount=money(100), reference="r" * 65)
    expect(INVALID, "INVALID_CHARACTERS", pay, payload=static, amount=money(1), reference="\x00")
    expect(INVALID, "QR_TOO_LONG", pay, payload=static + " " * 600, amount=money(100))
    # Another last CRC digit (never the same one: that would be the genuine code).
    bad = static[:-1] + ("0" if static[-1] != "0" else "1")
    expect(INVALID, "QR_CRC_MISMATCH", pay, payload=bad, amount=money(100))
    expect(NOT_FOUND, "QR_UNKNOWN", pay, payload=_forge(static, token="C" * 20), amount=money(1))
    expect(
        NOT_FOUND,
        "QR_UNKNOWN",
        pay,
        payload=_scanpay_payload("A\x00", poi="11"),
        amount=money(1),
    )
    assert con.balance_minor() == 100_00
    assert [status_name(p) for p in shop.all_payments()].count("SUCCEEDED") == 0


def test_insufficient_funds(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer(balance_minor=5_00)
    p = mer.create(10_00)
    expect(PRECONDITION, "INSUFFICIENT_FUNDS", con.pay, p.qr_payload)
    assert con.balance_minor() == 5_00
    assert con.balance().spent_today == money(0)
    assert status_name(mer.get(p.id)) == "PENDING"
    assert [type_name(e) for e in mer.log()] == ["CREATED"]
    # Static QR: no payment is left behind either.
    static = mer.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload
    expect(
        PRECONDITION,
        "INSUFFICIENT_FUNDS",
        con.stub.Pay,
        w.PayRequest(payload=static, amount=money(6_00), idempotency_key=key()),
    )
    assert len(mer.all_payments()) == 1
    assert psp.app.admin.ledger_check() == []


# -- static QR -----------------------------------------------------------------------------


def test_static_qr_amount_entry_and_reference(api: Api, psp: LivePsp) -> None:
    mer = api.merchant(name="Kiosk am Park", label="Till 3")
    con = api.consumer()
    static = mer.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload

    q = con.resolve(static)
    assert q.payable and q.amount_required and q.quote_id == ""
    assert q.initiation == w.QR_INITIATION_STATIC
    assert q.merchant.name == "Kiosk am Park"
    assert not q.HasField("amount")
    expect(INVALID, "CURRENCY_MISMATCH", con.resolve, static, money(750, "USD"))
    expect(INVALID, "INVALID_AMOUNT", con.resolve, static, money(0, "EUR"))
    expect(INVALID, "UNKNOWN_CURRENCY", con.resolve, static, money(750, "EUX"))
    expect(INVALID, "MISSING_FIELD", con.resolve, static, c.Money(amount_minor=750))

    q = con.resolve(static, money(750))
    assert q.payable and not q.amount_required and q.quote_id
    assert q.amount == money(750) and q.payer_amount == money(750)
    r = con.pay_quote(q.quote_id, reference="Table 4")
    assert r.amount == money(750) and r.order_id == "Table 4"
    assert r.balance_after == money(100_00 - 750)

    p = mer.get(r.payment_id)
    assert status_name(p) == "SUCCEEDED" and p.method == c.PAYMENT_METHOD_QR_STATIC
    assert (p.payer_reference, p.order_id) == ("Table 4", "Table 4")
    assert (p.terminal_id, p.terminal_label) == (mer.terminal_id, "Till 3")
    assert p.qr_payload == "" and p.pay_url == ""

    # Paying the printed code directly (payload + typed amount), without a reference.
    r2 = con.stub.Pay(w.PayRequest(payload=static, amount=money(120), idempotency_key=key()))
    p2 = mer.get(r2.payment_id)
    assert p2.amount == money(120) and p2.payer_reference == ""
    assert p2.order_id.startswith("STATIC-")

    events = mer.events(until_count=2, timeout=3)
    assert [(type_name(e), e.payment.id) for e in events] == [
        ("SUCCEEDED", r.payment_id),
        ("SUCCEEDED", r2.payment_id),
    ]
    assert con.balance_minor() == 100_00 - 750 - 120
    assert psp.app.admin.ledger_check() == []


# -- FX --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ramen(api: Api, psp: LivePsp) -> MerchantClient:
    psp.set_fx("EUR", "JPY", "160")
    return api.merchant(name="Tokyo Ramen", city="Tokyo", country="JP", currency="JPY")


def test_fx_quote_pay_and_refund(api: Api, psp: LivePsp, ramen: MerchantClient) -> None:
    con = api.consumer(currency="EUR")
    p = ramen.create(1600)  # 1,600 JPY = 10.00 EUR at 160, 10.15 EUR with the 1.5% markup
    now = psp.clock.now()
    q = con.resolve(p.qr_payload)
    assert q.amount == money(1600, "JPY")
    assert q.payer_amount == money(10_15, "EUR")
    assert q.fx_rate == "0.00634375"  # EUR per JPY: 1/160 * 1.015
    assert near(ts_dt(q.expires_at), now + timedelta(seconds=60))

    r = con.pay_quote(q.quote_id)
    assert r.amount == money(1600, "JPY") and r.payer_amount == money(10_15)
    assert r.fx_rate == "0.00634375"
    assert r.balance_after == money(100_00 - 10_15)
    paid = ramen.get(p.id)
    assert paid.fx.payer_amount == money(10_15) and paid.fx.rate == "0.00634375"
    assert paid.fx.locked_until == q.expires_at
    assert paid.fee == money(16, "JPY")
    assert ramen.balance_minor() == 1600 - 16
    assert con.balance().spent_today == money(10_15)

    # Refunds give back the payer's currency at the locked rate, to the last cent.
    ramen.refund(p.id, 800)
    assert con.balance_minor() == 100_00 - 10_15 + 5_07
    done = ramen.refund(p.id, 800)
    assert status_name(done) == "REFUNDED"
    assert con.balance_minor() == 100_00
    assert ramen.balance_minor() == 0
    assert psp.app.admin.ledger_check() == []


def test_fx_quote_expires(api: Api, psp: LivePsp, ramen: MerchantClient) -> None:
    con = api.consumer(currency="EUR")
    p = ramen.create(3200)
    q = con.resolve(p.qr_payload)
    psp.clock.advance(timedelta(seconds=61))
    expect(PRECONDITION, "QUOTE_EXPIRED", con.pay_quote, q.quote_id)
    assert con.balance_minor() == 100_00
    assert status_name(ramen.get(p.id)) == "PENDING"
    fresh = con.resolve(p.qr_payload)
    assert con.pay_quote(fresh.quote_id).payer_amount == money(20_30)


def test_fx_static_qr(api: Api, ramen: MerchantClient) -> None:
    con = api.consumer(currency="EUR")
    static = ramen.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload
    q = con.resolve(static, money(480, "JPY"))
    assert q.payer_amount == money(3_05)  # 3.045 rounded half up
    expect(INVALID, "CURRENCY_MISMATCH", con.resolve, static, money(300, "EUR"))
    r = con.stub.Pay(w.PayRequest(payload=static, amount=money(480, "JPY"), idempotency_key=key()))
    assert r.payer_amount == money(3_05) and r.fx_rate == "0.00634375"


def test_fx_rate_unavailable(api: Api) -> None:
    mer = api.merchant(name="Stockholm Deli", city="Stockholm", country="SE", currency="SEK")
    con = api.consumer(currency="NOK")
    p = mer.create(10_000, currency="SEK")
    expect(PRECONDITION, "FX_RATE_UNAVAILABLE", con.resolve, p.qr_payload)
    static = mer.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload
    expect(
        PRECONDITION,
        "FX_RATE_UNAVAILABLE",
        con.stub.Pay,
        w.PayRequest(payload=static, amount=money(100, "SEK"), idempotency_key=key()),
    )
    assert con.balance_minor() == 100_00


# -- KYC limits ------------------------------------------------------------------------------


def test_kyc_tier_0_limits(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer(kyc_tier=0, balance_minor=200_00)
    b = con.balance()
    assert b.kyc_tier == 0
    assert (b.per_payment_limit, b.daily_limit) == (money(50_00), money(150_00))

    over = mer.create(50_01)
    err = raised(con.pay, over.qr_payload)
    info = error_info(err)
    assert err.code() is PRECONDITION and info is not None
    assert (info.reason, info.metadata["limit"]) == ("LIMIT_EXCEEDED", "per_payment")
    assert info.metadata["limit_minor"] == "5000"
    assert status_name(mer.get(over.id)) == "PENDING"

    for _ in range(3):
        con.pay(mer.create(50_00).qr_payload)  # exactly the limit is fine
    assert con.balance().spent_today == money(150_00)
    err = raised(con.pay, mer.create(1).qr_payload)
    info = error_info(err)
    assert info is not None
    assert (info.reason, info.metadata["limit"]) == ("LIMIT_EXCEEDED", "per_day")
    static = mer.stub.GetStaticQr(m.GetStaticQrRequest()).qr_payload
    expect(
        PRECONDITION,
        "LIMIT_EXCEEDED",
        con.stub.Pay,
        w.PayRequest(payload=static, amount=money(1), idempotency_key=key()),
    )
    assert con.balance_minor() == 50_00
    assert psp.app.admin.ledger_check() == []


# -- ListTransactions --------------------------------------------------------------------------


def test_list_transactions_paging(api: Api, shop: MerchantClient) -> None:
    con = api.consumer(balance_minor=30_00)
    paid = [con.pay(shop.create(100 + i).qr_payload) for i in range(3)]
    shop.refund(paid[0].payment_id, 50)

    seen: list[w.Transaction] = []
    token = ""
    while True:
        page = con.stub.ListTransactions(w.ListTransactionsRequest(page_size=2, page_token=token))
        assert len(page.transactions) <= 2
        seen.extend(page.transactions)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len({t.id for t in seen}) == 5
    got = sorted((t.kind, t.amount.amount_minor) for t in seen)
    assert got == sorted(
        [
            (w.TRANSACTION_KIND_TOP_UP, 30_00),
            (w.TRANSACTION_KIND_PAYMENT, -100),
            (w.TRANSACTION_KIND_PAYMENT, -101),
            (w.TRANSACTION_KIND_PAYMENT, -102),
            (w.TRANSACTION_KIND_REFUND, 50),
        ]
    )
    assert sum(t.amount.amount_minor for t in seen) == con.balance_minor()

    def lst(**kw: Any) -> Any:
        return con.stub.ListTransactions(w.ListTransactionsRequest(**kw))

    expect(INVALID, "INVALID_PAGE_SIZE", lst, page_size=201)
    expect(INVALID, "INVALID_PAGE_SIZE", lst, page_size=-5)
    expect(INVALID, "INVALID_PAGE_TOKEN", lst, page_token="nope")
    expect(INVALID, "INVALID_PAGE_TOKEN", lst, page_token="pay_" + "0" * 26)
    expect(INVALID, "INVALID_PAGE_TOKEN", lst, page_token="txn_" + "\x00" * 26)
    # Another consumer sees only their own.
    other = api.consumer(balance_minor=0)
    assert list(other.stub.ListTransactions(w.ListTransactionsRequest()).transactions) == []
