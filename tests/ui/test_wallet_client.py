"""The wallet's gRPC client: invisible token refresh, retries with the same idempotency key,
errors decoded from ``google.rpc.ErrorInfo``; first against a scripted in-process server,
then against the real PSP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from protos.scanpay.v1 import common_pb2, wallet_pb2, wallet_pb2_grpc
from psp_server.domain.money import Money
from wallet_app.client import (
    SESSION_ENDED,
    ClientError,
    GrpcWalletClient,
    RetryPolicy,
    open_channel,
    qr_currency_hint,
)

# -- a scripted server ------------------------------------------------------------------------


def _ts(t: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


class ScriptedWallet(wallet_pb2_grpc.WalletServiceServicer):
    """Answers from a script: ``fail[method]`` is a list of (code, reason) to abort with."""

    def __init__(self) -> None:
        self.fail: dict[str, list[tuple[grpc.StatusCode, str]]] = {}
        self.seen: list[tuple[str, str, object]] = []  # (method, bearer, request)
        self.sessions = 0
        self.access_ttl = timedelta(minutes=15)

    async def _enter(self, name, request, context) -> None:
        auth = dict(context.invocation_metadata()).get("authorization", "")
        self.seen.append((name, auth, request))
        script = self.fail.get(name)
        if script:
            code, reason = script.pop(0)
            info = error_details_pb2.ErrorInfo(reason=reason, domain="psp", metadata={"k": "v"})
            detail = any_pb2.Any()
            detail.Pack(info)
            status = status_pb2.Status(
                code=code.value[0], message=f"scripted {reason.lower()}", details=[detail]
            )
            await context.abort_with_status(rpc_status.to_status(status))

    def _session(self) -> wallet_pb2.Session:
        self.sessions += 1
        n = self.sessions
        return wallet_pb2.Session(
            access_token=f"at-{n}",
            refresh_token=f"rt-{n}",
            access_expires_at=_ts(datetime.now(UTC) + self.access_ttl),
            consumer=wallet_pb2.Consumer(id="con_1", email="ann@example.com", currency="EUR"),
        )

    async def Login(self, request, context):
        await self._enter("Login", request, context)
        return self._session()

    async def Register(self, request, context):
        await self._enter("Register", request, context)
        return self._session()

    async def Refresh(self, request, context):
        await self._enter("Refresh", request, context)
        return self._session()

    async def GetBalance(self, request, context):
        await self._enter("GetBalance", request, context)
        return wallet_pb2.Balance(available=common_pb2.Money(amount_minor=4200, currency="EUR"))

    async def Pay(self, request, context):
        await self._enter("Pay", request, context)
        return wallet_pb2.Receipt(
            transaction_id="txn_1",
            payment_id="pay_1",
            merchant_name="Corner Bakery",
            amount=common_pb2.Money(amount_minor=1250, currency="EUR"),
            balance_after=common_pb2.Money(amount_minor=8750, currency="EUR"),
        )


@pytest.fixture
async def scripted():
    servicer = ScriptedWallet()
    server = grpc.aio.server()
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}")
    delays: list[float] = []

    async def no_sleep(seconds: float) -> None:
        delays.append(seconds)

    sessions = []

    async def on_session(s):
        sessions.append(s)

    client = GrpcWalletClient(channel, sleep=no_sleep, on_session=on_session)
    yield servicer, client, delays, sessions
    await channel.close()
    await server.stop(None)


async def test_an_expired_access_token_is_refreshed_invisibly(scripted):
    server, client, _, sessions = scripted
    await client.login("ann@example.com", "pw")
    server.fail["GetBalance"] = [(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")]
    balance = await client.get_balance()
    assert balance.available == Money(4200, "EUR")
    calls = [(m, auth) for m, auth, _ in server.seen]
    assert calls == [
        ("Login", ""),
        ("GetBalance", "Bearer at-1"),
        ("Refresh", ""),
        ("GetBalance", "Bearer at-2"),
    ]
    assert server.seen[2][2].refresh_token == "rt-1"
    assert [s.refresh_token for s in sessions] == ["rt-1", "rt-2"]


async def test_a_token_about_to_expire_is_refreshed_first(scripted):
    server, client, _, _ = scripted
    server.access_ttl = timedelta(seconds=5)  # inside the client's refresh margin
    await client.login("ann@example.com", "pw")
    server.access_ttl = timedelta(minutes=15)
    await client.get_balance()
    assert [m for m, _, _ in server.seen] == ["Login", "Refresh", "GetBalance"]


async def test_refused_twice_is_not_retried_forever(scripted):
    server, client, _, _ = scripted
    await client.login("ann@example.com", "pw")
    server.fail["GetBalance"] = [(grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")] * 2
    with pytest.raises(ClientError) as exc:
        await client.get_balance()
    assert exc.value.reason == "INVALID_TOKEN"
    assert [m for m, _, _ in server.seen].count("Refresh") == 1


async def test_a_dead_refresh_token_ends_the_session(scripted):
    server, client, _, sessions = scripted
    await client.login("ann@example.com", "pw")
    server.fail["GetBalance"] = [(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")]
    server.fail["Refresh"] = [(grpc.StatusCode.UNAUTHENTICATED, "INVALID_REFRESH_TOKEN")]
    with pytest.raises(ClientError) as exc:
        await client.get_balance()
    assert exc.value.reason == SESSION_ENDED
    assert client.session is None and sessions[-1] is None


async def test_unavailable_is_retried_with_backoff_and_the_same_key(scripted):
    server, client, delays, _ = scripted
    await client.login("ann@example.com", "pw")
    server.fail["Pay"] = [(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")] * 3
    receipt = await client.pay(idempotency_key="key-1", quote_id="qt_1")
    assert receipt.merchant_name == "Corner Bakery"
    assert receipt.balance_after == Money(8750, "EUR")
    keys = [r.idempotency_key for m, _, r in server.seen if m == "Pay"]
    assert keys == ["key-1"] * 4
    assert len(delays) == 3
    assert delays[0] <= 0.2 and delays[2] >= 0.4  # exponential, with jitter


async def test_retries_give_up(scripted):
    server, client, _delays, _ = scripted
    await client.login("ann@example.com", "pw")
    server.fail["Pay"] = [(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")] * 10
    with pytest.raises(ClientError) as exc:
        await client.pay(idempotency_key="key-2", quote_id="qt_1")
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE
    assert len([1 for m, _, _ in server.seen if m == "Pay"]) == RetryPolicy().attempts


async def test_register_is_never_retried(scripted):
    server, client, _, _ = scripted
    server.fail["Register"] = [(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")]
    with pytest.raises(ClientError):
        await client.register("ann@example.com", "pw", "EUR")
    assert [m for m, _, _ in server.seen] == ["Register"]


async def test_error_info_reason_code_and_message(scripted):
    server, client, _, _ = scripted
    await client.login("ann@example.com", "pw")
    server.fail["Pay"] = [(grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")]
    with pytest.raises(ClientError) as exc:
        await client.pay(idempotency_key="k", quote_id="qt_1")
    e = exc.value
    assert (e.reason, e.code) == ("INSUFFICIENT_FUNDS", grpc.StatusCode.FAILED_PRECONDITION)
    assert e.message == "scripted insufficient_funds"
    assert e.metadata == {"k": "v"}


async def test_no_server_at_all():
    channel = open_channel("127.0.0.1:9")  # discard port: nothing listens

    async def no_sleep(_):
        return None

    client = GrpcWalletClient(channel, sleep=no_sleep, retry=RetryPolicy(attempts=2, timeout=3))
    with pytest.raises(ClientError) as exc:
        await client.login("a@b.c", "pw")
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE
    await channel.close()


def test_currency_hint_from_the_qr():
    assert qr_currency_hint("000201010211530397859" + "05Hello") == "EUR"
    assert qr_currency_hint("0002015303756") == "CHF"
    assert qr_currency_hint("garbage") is None
    assert qr_currency_hint("") is None


# -- the real PSP -------------------------------------------------------------------------------


EMAIL = "ann@example.com"
PASSWORD = "correct horse"


@pytest.fixture
async def real(live_psp):
    creds = live_psp.create_merchant()
    live_psp.create_consumer(EMAIL, PASSWORD)
    channel = open_channel(live_psp.address)
    client = GrpcWalletClient(channel)
    yield live_psp, creds, client
    await channel.close()


async def test_pay_a_dynamic_qr_on_the_real_psp(real):
    psp, creds, client = real
    session = await client.login(EMAIL, PASSWORD)
    assert session.consumer.email == EMAIL and session.consumer.currency == "EUR"
    assert (await client.get_balance()).available == Money(100_00, "EUR")
    payment_id, payload = psp.create_payment(creds.api_key, 12_50, order_id="ORDER-7")
    quote = await client.resolve_qr(payload)
    assert quote.payable and quote.quote_id
    assert quote.merchant.name == "Corner Bakery"
    assert quote.amount == Money(12_50, "EUR")
    assert quote.initiation == "dynamic" and quote.payment_id == payment_id
    key = uuid.uuid4().hex
    receipt = await client.pay(idempotency_key=key, quote_id=quote.quote_id)
    assert receipt.payment_id == payment_id and receipt.order_id == "ORDER-7"
    assert receipt.balance_after == Money(87_50, "EUR")
    # The same key again is the same payment, not a second one.
    again = await client.pay(idempotency_key=key, quote_id=quote.quote_id)
    assert again.transaction_id == receipt.transaction_id
    assert (await client.get_balance()).available == Money(87_50, "EUR")
    page = await client.list_transactions()
    paid = [t for t in page.transactions if t.kind == "payment"]
    assert paid and paid[0].amount == Money(-12_50, "EUR")
    events = psp.watch_events(creds.api_key, until_count=2, timeout=3)
    assert payment_id in {pid for _, _, pid in events}
    # A paid code is not payable again.
    after = await client.resolve_qr(payload)
    assert not after.payable
    assert after.warning("PAYMENT_ALREADY_PAID") is not None


async def test_static_qr_on_the_real_psp(real):
    psp, creds, client = real
    await client.login(EMAIL, PASSWORD)
    payload = psp.static_qr(creds.api_key)
    assert qr_currency_hint(payload) == "EUR"
    open_quote = await client.resolve_qr(payload)
    assert open_quote.amount_required and not open_quote.quote_id
    assert open_quote.initiation == "static"
    priced = await client.resolve_qr(payload, Money(7_50, "EUR"))
    assert priced.payable and priced.quote_id and priced.amount == Money(7_50, "EUR")
    receipt = await client.pay(
        idempotency_key=uuid.uuid4().hex, quote_id=priced.quote_id, reference="table 4"
    )
    assert receipt.amount == Money(7_50, "EUR")


async def test_errors_from_the_real_psp(real):
    psp, creds, client = real
    with pytest.raises(ClientError) as exc:
        await client.login(EMAIL, "wrong password")
    assert exc.value.reason == "INVALID_CREDENTIALS"
    await client.login(EMAIL, PASSWORD)
    _, payload = psp.create_payment(creds.api_key, 500_00)
    quote = await client.resolve_qr(payload)
    with pytest.raises(ClientError) as exc:
        await client.pay(idempotency_key=uuid.uuid4().hex, quote_id=quote.quote_id)
    assert exc.value.reason in ("INSUFFICIENT_FUNDS", "LIMIT_EXCEEDED")
    with pytest.raises(ClientError) as exc:
        await client.resolve_qr("000201" + "hello")
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.reason.startswith("QR_")


async def test_token_refresh_on_the_real_psp(real):
    psp, _, client = real
    sessions = []

    async def keep(s):
        sessions.append(s)

    client.on_session = keep
    await client.login(EMAIL, PASSWORD)
    psp.clock.advance(timedelta(minutes=20))  # the access token has expired server-side
    assert (await client.get_balance()).available == Money(100_00, "EUR")
    assert len(sessions) == 2 and sessions[1].refresh_token
