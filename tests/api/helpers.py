"""Helpers for the API tests: authenticated sync stubs, error decoding, and per-test
merchants and consumers on the shared module server (``tests/support/psp.py``)."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import merchant_pb2_grpc, wallet_pb2_grpc
from protos.scanpay.v1 import wallet_pb2 as w
from psp_server.domain import ids, ledger
from psp_server.domain.parties import Consumer
from psp_server.service import auth
from tests.support.psp import LivePsp

PASSWORD = "correct horse"
# One real argon2 hash of PASSWORD, made once: seeding a consumer then costs no hashing
# (argon2 takes ~150 ms a call; the concurrency tests need dozens of consumers).
_PASSWORD_HASH = auth.hash_password(PASSWORD)

#: Codes no input may ever produce.
FORBIDDEN_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})


def uid() -> str:
    return uuid.uuid4().hex


def key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


def money(amount_minor: int, currency: str = "EUR") -> c.Money:
    return c.Money(amount_minor=amount_minor, currency=currency)


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


class Authed:
    """A stub whose every call carries the given metadata (and a default timeout)."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...], timeout: float = 15):
        self._stub = stub
        self._md = metadata
        self._timeout = timeout

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        if name == "WatchPayments":
            return functools.partial(method, metadata=self._md)
        return functools.partial(method, metadata=self._md, timeout=self._timeout)


def error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The google.rpc.ErrorInfo of a failed call (from grpc-status-details-bin)."""
    call: Any = exc
    status = rpc_status.from_call(call)
    if status is None:
        return None
    assert status.code == call.code().value[0], "status detail and call code disagree"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "scanpay", info
            return info
    return None


def status_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """(code, google.rpc.ErrorInfo.reason) of a failed call; reason "" without ErrorInfo."""
    call: Any = exc
    info = error_info(exc)
    return call.code(), info.reason if info is not None else ""


def raised(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """Call and return the grpc.RpcError it must raise."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{getattr(fn, 'func', fn)} succeeded; an error was expected")


def rpc_error(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    """Call and return (code, reason) of the error it must raise."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as exc:
        return status_of(exc)
    raise AssertionError(f"{getattr(fn, 'func', fn)} succeeded; an error was expected")


def expect(
    code: grpc.StatusCode, reason: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> None:
    got = rpc_error(fn, *args, **kwargs)
    assert got == (code, reason), f"expected {(code, reason)}, got {got}"


INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
EXISTS = grpc.StatusCode.ALREADY_EXISTS


@dataclass
class MerchantClient:
    psp: LivePsp
    merchant_id: str
    terminal_id: str
    api_key: str
    name: str
    currency: str
    stub: Any  # Authed MerchantServiceStub

    def create(
        self,
        amount_minor: int = 1250,
        *,
        order_id: str | None = None,
        currency: str | None = None,
        expires_in_seconds: int = 0,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> c.Payment:
        return self.stub.CreatePayment(
            m.CreatePaymentRequest(
                order_id=order_id or f"ORD-{uid()[:10].upper()}",
                amount=money(amount_minor, currency or self.currency),
                description=description,
                expires_in_seconds=expires_in_seconds,
                idempotency_key=idempotency_key or key(),
            )
        )

    def get(self, payment_id: str) -> c.Payment:
        return self.stub.GetPayment(m.GetPaymentRequest(payment_id=payment_id))

    def refund(self, payment_id: str, amount_minor: int, reason: str = "") -> c.Payment:
        return self.stub.RefundPayment(
            m.RefundPaymentRequest(
                payment_id=payment_id,
                amount=money(amount_minor, self.currency),
                reason=reason,
                idempotency_key=key(),
            )
        )

    def cancel(self, payment_id: str) -> c.Payment:
        return self.stub.CancelPayment(
            m.CancelPaymentRequest(payment_id=payment_id, idempotency_key=key())
        )

    def all_payments(self, **filters: Any) -> list[c.Payment]:
        out: list[c.Payment] = []
        token = ""
        while True:
            page = self.stub.ListPayments(
                m.ListPaymentsRequest(page_size=200, page_token=token, **filters)
            )
            out.extend(page.payments)
            token = page.next_page_token
            if not token:
                return out

    def balance_minor(self) -> int:
        """What the PSP owes this merchant (its ledger account)."""
        ref = ledger.merchant(self.merchant_id, self.currency)
        return int(self.psp.app.db.read_sync(lambda s: s.balance(ref)))

    def last_seq(self) -> int:
        return int(self.psp.app.db.read_sync(lambda s: s.last_event_seq(self.merchant_id)))

    def log(self) -> list[m.PaymentEvent]:
        """The merchant's whole event log, as the stream replays it."""
        n = self.last_seq()
        out = self.events(until_count=n) if n else []
        assert len(out) == n
        return out

    def events(
        self, after_cursor: str = "", until_count: int | None = None, timeout: float = 5.0
    ) -> list[m.PaymentEvent]:
        """Read the stream: stop after ``until_count`` events or ``timeout`` seconds."""
        out: list[m.PaymentEvent] = []
        call = self.stub.WatchPayments(
            m.WatchPaymentsRequest(after_cursor=after_cursor), timeout=timeout
        )
        try:
            for ev in call:
                out.append(ev)
                if until_count is not None and len(out) >= until_count:
                    break
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            call.cancel()
        return out


@dataclass
class ConsumerClient:
    psp: LivePsp
    consumer_id: str
    email: str
    currency: str
    channel: grpc.Channel

    @property
    def token(self) -> str:
        """A fresh access token for this consumer, as Login would issue it (minted with the
        server's secret and clock, so it costs no argon2 verification)."""
        s = self.psp.app.settings
        return auth.issue_access_token(
            s.secret, self.consumer_id, self.psp.clock.now(), s.access_ttl
        )

    @property
    def stub(self) -> Any:
        return Authed(wallet_pb2_grpc.WalletServiceStub(self.channel), bearer(self.token))

    def balance(self) -> w.Balance:
        return self.stub.GetBalance(w.GetBalanceRequest())

    def balance_minor(self) -> int:
        ref = ledger.wallet(self.consumer_id, self.currency)
        return int(self.psp.app.db.read_sync(lambda s: s.balance(ref)))

    def resolve(self, payload: str, amount: c.Money | None = None) -> w.Quote:
        return self.stub.ResolveQr(w.ResolveQrRequest(payload=payload, amount=amount))

    def pay_quote(self, quote_id: str, reference: str = "", idem: str | None = None) -> w.Receipt:
        return self.stub.Pay(
            w.PayRequest(quote_id=quote_id, reference=reference, idempotency_key=idem or key())
        )

    def pay(self, payload: str) -> w.Receipt:
        """Resolve a dynamic QR and pay its quote."""
        return self.pay_quote(self.resolve(payload).quote_id)


class Api:
    """One channel to the module's server plus factories of fresh parties."""

    def __init__(self, psp: LivePsp) -> None:
        self.psp = psp
        self.channel = grpc.insecure_channel(psp.address)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.channel.close()

    def merchant_stub(self, api_key: str) -> Any:
        return Authed(merchant_pb2_grpc.MerchantServiceStub(self.channel), bearer(api_key))

    def raw_merchant(self) -> merchant_pb2_grpc.MerchantServiceStub:
        return merchant_pb2_grpc.MerchantServiceStub(self.channel)

    def raw_wallet(self) -> wallet_pb2_grpc.WalletServiceStub:
        return wallet_pb2_grpc.WalletServiceStub(self.channel)

    def merchant(
        self,
        name: str = "Corner Bakery",
        currency: str = "EUR",
        country: str = "DE",
        city: str = "Berlin",
        label: str = "Till 1",
        discount_rate_bps: int | None = None,
    ) -> MerchantClient:
        creds = self.psp.create_merchant(
            name=name,
            city=city,
            country=country,
            currency=currency,
            label=label,
            discount_rate_bps=discount_rate_bps,
        )
        return MerchantClient(
            self.psp,
            creds.merchant_id,
            creds.terminal_id,
            creds.api_key,
            name,
            currency,
            self.merchant_stub(creds.api_key),
        )

    def consumer(
        self, currency: str = "EUR", kyc_tier: int = 2, balance_minor: int = 100_00
    ) -> ConsumerClient:
        """A new consumer (password PASSWORD), topped up by the operator."""
        email = f"c-{uid()}@example.com"
        now = self.psp.clock.now()
        con = Consumer(
            id=ids.new_id("con"),
            email=email,
            display_name="Test Consumer",
            password_hash=_PASSWORD_HASH,
            currency=currency,
            kyc_tier=kyc_tier,
            failed_logins=0,
            locked_until=None,
            created_at=now,
        )
        self.psp.app.db.write_sync(lambda s: s.insert_consumer(con))
        if balance_minor:
            self.psp.app.admin.top_up(con.id, balance_minor, currency)
        return ConsumerClient(self.psp, con.id, email, currency, self.channel)


@contextmanager
def api_for(psp: LivePsp) -> Iterator[Api]:
    api = Api(psp)
    try:
        yield api
    finally:
        api.close()


def cursors(events: list[m.PaymentEvent]) -> list[int]:
    return [int(e.cursor) for e in events]


def consecutive(events: list[m.PaymentEvent], start_after: int = 0) -> bool:
    return cursors(events) == list(range(start_after + 1, start_after + 1 + len(events)))


def type_name(ev: m.PaymentEvent) -> str:
    return m.PaymentEventType.Name(ev.type).removeprefix("PAYMENT_EVENT_TYPE_")


def status_name(p: c.Payment) -> str:
    return c.PaymentStatus.Name(p.status).removeprefix("PAYMENT_STATUS_")


def ts_dt(ts: Any) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def near(a: datetime, b: datetime, tolerance: timedelta = timedelta(seconds=3)) -> bool:
    return abs(a - b) <= tolerance
