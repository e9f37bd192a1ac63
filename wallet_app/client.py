"""The wallet's window on the PSP: ``WalletService`` over ``grpc.aio``, plain dataclasses out.

Views and state never see a ``_pb2`` type. Errors come out as :class:`ClientError` with the
stable reason the server put in ``google.rpc.ErrorInfo``.

The real client takes care of two transport matters so the rest of the app does not:

* **Sessions.** It holds the access and refresh tokens. A call that meets an expired or
  invalid access token (``UNAUTHENTICATED`` with ``TOKEN_EXPIRED``/``INVALID_TOKEN``)
  refreshes once and is retried once; an access token about to expire is refreshed before
  the call. Whoever cares (the state, to keep the refresh token in the browser's storage)
  is told of every new session through ``on_session``.
* **Retries.** A call that fails with ``UNAVAILABLE`` (server restarting, network blip) is
  retried with exponential backoff and jitter. Pay and TopUp carry the caller's idempotency
  key, so a retry can never charge twice. Register is not retried (it has no key).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from protos.scanpay.v1 import common_pb2, wallet_pb2, wallet_pb2_grpc
from psp_server.domain.money import Money, currency_from_numeric

T = TypeVar("T")

#: Reasons that mean "the access token is stale": refresh and retry once.
REFRESH_REASONS = frozenset({"TOKEN_EXPIRED", "INVALID_TOKEN"})
#: Reason raised by the client when the session cannot be renewed: sign in again.
SESSION_ENDED = "SESSION_ENDED"


class ClientError(Exception):
    """A failed call: the server's stable ``reason``, a message for people, the gRPC code."""

    def __init__(
        self,
        reason: str,
        message: str,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.code = code
        self.metadata = dict(metadata or {})


# -- plain data ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Consumer:
    id: str
    email: str
    display_name: str
    currency: str
    kyc_tier: int


@dataclass(frozen=True, slots=True)
class AuthSession:
    access_token: str
    refresh_token: str
    consumer: Consumer
    access_expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Balance:
    available: Money
    kyc_tier: int = 0
    per_payment_limit: Money | None = None
    daily_limit: Money | None = None
    spent_today: Money | None = None


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    city: str = ""
    country: str = ""
    mcc: str = ""


@dataclass(frozen=True, slots=True)
class QuoteWarning:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Quote:
    payable: bool
    scheme: str
    quote_id: str = ""
    initiation: str = ""  # "static", "dynamic" or ""
    merchant: Merchant | None = None
    qr_merchant_name: str = ""
    amount_required: bool = False
    amount: Money | None = None
    payer_amount: Money | None = None
    fx_rate: str = ""
    expires_at: datetime | None = None
    warnings: tuple[QuoteWarning, ...] = ()
    payment_id: str = ""
    order_id: str = ""
    description: str = ""

    def warning(self, code: str) -> QuoteWarning | None:
        return next((w for w in self.warnings if w.code == code), None)


@dataclass(frozen=True, slots=True)
class Receipt:
    transaction_id: str
    payment_id: str
    merchant_name: str
    amount: Money
    payer_amount: Money | None = None
    fx_rate: str = ""
    balance_after: Money | None = None
    paid_at: datetime | None = None
    order_id: str = ""


@dataclass(frozen=True, slots=True)
class Transaction:
    id: str
    kind: str  # "payment", "refund", "top_up"
    amount: Money  # signed from the wallet's view
    merchant_name: str = ""
    payment_id: str = ""
    created_at: datetime | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class TransactionPage:
    transactions: list[Transaction] = field(default_factory=list)
    next_page_token: str = ""


SessionListener = Callable[[AuthSession | None], Awaitable[None]]


class WalletClient(Protocol):
    """What the state needs from the PSP. ``GrpcWalletClient`` is the real one."""

    on_session: SessionListener | None

    @property
    def session(self) -> AuthSession | None: ...

    async def register(
        self, email: str, password: str, currency: str, display_name: str = ""
    ) -> AuthSession: ...

    async def login(self, email: str, password: str) -> AuthSession: ...

    async def resume(self, refresh_token: str) -> AuthSession: ...

    async def sign_out(self) -> None: ...

    async def get_balance(self) -> Balance: ...

    async def top_up(self, amount: Money, idempotency_key: str) -> Balance: ...

    async def resolve_qr(self, payload: str, amount: Money | None = None) -> Quote: ...

    async def pay(
        self,
        *,
        idempotency_key: str,
        quote_id: str = "",
        payload: str = "",
        amount: Money | None = None,
        reference: str = "",
    ) -> Receipt: ...

    async def list_transactions(
        self, page_size: int = 20, page_token: str = ""
    ) -> TransactionPage: ...


# -- EMV hint ------------------------------------------------------------------------------


def qr_currency_hint(payload: str) -> str | None:
    """The ISO 4217 code in tag 53 of an EMV MPM payload, if there is a readable one.

    Only a hint for the amount field of a static QR (the PSP decides); any malformed
    payload simply gives ``None``.
    """
    i = 0
    while i + 4 <= len(payload):
        tag, length = payload[i : i + 2], payload[i + 2 : i + 4]
        if not (tag.isdigit() and length.isdigit()):
            return None
        value = payload[i + 4 : i + 4 + int(length)]
        if tag == "53":
            return currency_from_numeric(value)
        i += 4 + int(length)
    return None


# -- proto <-> plain -------------------------------------------------------------------------


def _money(m: common_pb2.Money, present: bool = True) -> Money | None:
    if not present or not m.currency:
        return None
    return Money(int(m.amount_minor), m.currency)


def _time(msg: Any, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, name)
    return ts.ToDatetime(tzinfo=UTC)


def _session(s: wallet_pb2.Session) -> AuthSession:
    c = s.consumer
    return AuthSession(
        access_token=s.access_token,
        refresh_token=s.refresh_token,
        consumer=Consumer(
            id=c.id,
            email=c.email,
            display_name=c.display_name,
            currency=c.currency,
            kyc_tier=c.kyc_tier,
        ),
        access_expires_at=_time(s, "access_expires_at"),
        refresh_expires_at=_time(s, "refresh_expires_at"),
    )


def _balance(b: wallet_pb2.Balance) -> Balance:
    available = _money(b.available)
    if available is None:
        raise ClientError("BAD_RESPONSE", "the PSP sent a balance without a currency")
    return Balance(
        available=available,
        kyc_tier=b.kyc_tier,
        per_payment_limit=_money(b.per_payment_limit, b.HasField("per_payment_limit")),
        daily_limit=_money(b.daily_limit, b.HasField("daily_limit")),
        spent_today=_money(b.spent_today, b.HasField("spent_today")),
    )


_INITIATION = {
    wallet_pb2.QR_INITIATION_STATIC: "static",
    wallet_pb2.QR_INITIATION_DYNAMIC: "dynamic",
}

_KIND = {
    wallet_pb2.TRANSACTION_KIND_PAYMENT: "payment",
    wallet_pb2.TRANSACTION_KIND_REFUND: "refund",
    wallet_pb2.TRANSACTION_KIND_TOP_UP: "top_up",
}


def _quote(q: wallet_pb2.Quote) -> Quote:
    merchant = None
    if q.HasField("merchant") and (q.merchant.id or q.merchant.name):
        m = q.merchant
        merchant = Merchant(id=m.id, name=m.name, city=m.city, country=m.country, mcc=m.mcc)
    return Quote(
        quote_id=q.quote_id,
        payable=q.payable,
        scheme=q.scheme,
        initiation=_INITIATION.get(q.initiation, ""),
        merchant=merchant,
        qr_merchant_name=q.qr_merchant_name,
        amount_required=q.amount_required,
        amount=_money(q.amount, q.HasField("amount")),
        payer_amount=_money(q.payer_amount, q.HasField("payer_amount")),
        fx_rate=q.fx_rate,
        expires_at=_time(q, "expires_at"),
        warnings=tuple(QuoteWarning(w.code, w.message) for w in q.warnings),
        payment_id=q.payment_id,
        order_id=q.order_id,
        description=q.description,
    )


def _receipt(r: wallet_pb2.Receipt) -> Receipt:
    amount = _money(r.amount)
    if amount is None:
        raise ClientError("BAD_RESPONSE", "the PSP sent a receipt without an amount")
    return Receipt(
        transaction_id=r.transaction_id,
        payment_id=r.payment_id,
        merchant_name=r.merchant_name,
        amount=amount,
        payer_amount=_money(r.payer_amount, r.HasField("payer_amount")),
        fx_rate=r.fx_rate,
        balance_after=_money(r.balance_after, r.HasField("balance_after")),
        paid_at=_time(r, "paid_at"),
        order_id=r.order_id,
    )


def _transaction(t: wallet_pb2.Transaction) -> Transaction:
    amount = _money(t.amount)
    if amount is None:
        raise ClientError("BAD_RESPONSE", "the PSP sent a transaction without an amount")
    return Transaction(
        id=t.id,
        kind=_KIND.get(t.kind, "other"),
        amount=amount,
        merchant_name=t.merchant_name,
        payment_id=t.payment_id,
        created_at=_time(t, "created_at"),
        description=t.description,
    )


def _pb_money(m: Money) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=m.amount_minor, currency=m.currency)


async def error_from_call(call: Any, exc: grpc.RpcError) -> ClientError:
    """Turn a failed ``grpc.aio`` call into a :class:`ClientError` with the stable reason."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = (exc.details() if hasattr(exc, "details") else "") or ""
    reason, metadata = "", {}
    try:
        status = await rpc_status.aio.from_call(call)
    except Exception:  # a malformed status must not hide the error itself
        status = None
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
                break
    return ClientError(reason or code.name, message or code.name, code, metadata)


# -- the real client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter on ``UNAVAILABLE``."""

    attempts: int = 5
    first_delay: float = 0.2
    max_delay: float = 2.0
    timeout: float = 10.0  # per attempt

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_delay, self.first_delay * 2.0**attempt)
        return random.uniform(0.5, 1.0) * ceiling


class GrpcWalletClient:
    """``WalletClient`` over a ``grpc.aio`` channel (shared by every session of the app)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        retry: RetryPolicy | None = None,
        on_session: SessionListener | None = None,
        refresh_margin: timedelta = timedelta(seconds=20),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)
        self._retry = retry or RetryPolicy()
        self._session: AuthSession | None = None
        self._refresh_lock = asyncio.Lock()
        self._refresh_margin = refresh_margin
        self._sleep = sleep
        self.on_session = on_session

    @property
    def session(self) -> AuthSession | None:
        return self._session

    async def _set_session(self, session: AuthSession | None) -> None:
        self._session = session
        if self.on_session is not None:
            await self.on_session(session)

    # plumbing

    async def _unary(
        self, method: Callable[..., Any], request: Any, *, auth: bool, retry: bool = True
    ) -> Any:
        attempts = self._retry.attempts if retry else 1
        for attempt in range(attempts):
            metadata = None
            if auth:
                if self._session is None:
                    raise ClientError(
                        SESSION_ENDED, "sign in first", grpc.StatusCode.UNAUTHENTICATED
                    )
                metadata = (("authorization", f"Bearer {self._session.access_token}"),)
            call = method(request, metadata=metadata, timeout=self._retry.timeout)
            try:
                return await call
            except grpc.RpcError as exc:
                err = await error_from_call(call, exc)
            if err.code == grpc.StatusCode.UNAVAILABLE and attempt + 1 < attempts:
                await self._sleep(self._retry.delay(attempt))
                continue
            raise err
        raise AssertionError("unreachable")  # pragma: no cover

    async def _authed(self, method: Callable[..., Any], request: Any) -> Any:
        """Call with the access token; refresh it first if stale, or once if refused."""
        session = self._session
        if session is None:
            raise ClientError(SESSION_ENDED, "sign in first", grpc.StatusCode.UNAUTHENTICATED)
        expires = session.access_expires_at
        if expires is not None and expires - self._refresh_margin <= datetime.now(UTC):
            await self._refresh(session)
        try:
            return await self._unary(method, request, auth=True)
        except ClientError as err:
            if err.code != grpc.StatusCode.UNAUTHENTICATED or err.reason not in REFRESH_REASONS:
                raise
        await self._refresh(session)
        return await self._unary(method, request, auth=True)

    async def _refresh(self, stale: AuthSession) -> None:
        async with self._refresh_lock:
            current = self._session
            if current is None:
                raise ClientError(SESSION_ENDED, "sign in again", grpc.StatusCode.UNAUTHENTICATED)
            if current is not stale:
                return  # another call refreshed while this one waited
            try:
                reply = await self._unary(
                    self._stub.Refresh,
                    wallet_pb2.RefreshRequest(refresh_token=current.refresh_token),
                    auth=False,
                )
            except ClientError as err:
                if err.code == grpc.StatusCode.UNAUTHENTICATED:
                    await self._set_session(None)
                    raise ClientError(
                        SESSION_ENDED, "your session has ended; sign in again", err.code
                    ) from err
                raise
            await self._set_session(_session(reply))

    # sessions

    async def register(
        self, email: str, password: str, currency: str, display_name: str = ""
    ) -> AuthSession:
        reply = await self._unary(
            self._stub.Register,
            wallet_pb2.RegisterRequest(
                email=email, password=password, currency=currency, display_name=display_name
            ),
            auth=False,
            retry=False,
        )
        session = _session(reply)
        await self._set_session(session)
        return session

    async def login(self, email: str, password: str) -> AuthSession:
        reply = await self._unary(
            self._stub.Login, wallet_pb2.LoginRequest(email=email, password=password), auth=False
        )
        session = _session(reply)
        await self._set_session(session)
        return session

    async def resume(self, refresh_token: str) -> AuthSession:
        try:
            reply = await self._unary(
                self._stub.Refresh,
                wallet_pb2.RefreshRequest(refresh_token=refresh_token),
                auth=False,
            )
        except ClientError as err:
            if err.code == grpc.StatusCode.UNAUTHENTICATED:
                raise ClientError(SESSION_ENDED, "sign in again", err.code) from err
            raise
        session = _session(reply)
        await self._set_session(session)
        return session

    async def sign_out(self) -> None:
        await self._set_session(None)

    # wallet

    async def get_balance(self) -> Balance:
        return _balance(await self._authed(self._stub.GetBalance, wallet_pb2.GetBalanceRequest()))

    async def top_up(self, amount: Money, idempotency_key: str) -> Balance:
        request = wallet_pb2.TopUpRequest(amount=_pb_money(amount), idempotency_key=idempotency_key)
        return _balance(await self._authed(self._stub.TopUp, request))

    async def resolve_qr(self, payload: str, amount: Money | None = None) -> Quote:
        request = wallet_pb2.ResolveQrRequest(payload=payload)
        if amount is not None:
            request.amount.CopyFrom(_pb_money(amount))
        return _quote(await self._authed(self._stub.ResolveQr, request))

    async def pay(
        self,
        *,
        idempotency_key: str,
        quote_id: str = "",
        payload: str = "",
        amount: Money | None = None,
        reference: str = "",
    ) -> Receipt:
        request = wallet_pb2.PayRequest(
            quote_id=quote_id,
            payload=payload,
            reference=reference,
            idempotency_key=idempotency_key,
        )
        if amount is not None:
            request.amount.CopyFrom(_pb_money(amount))
        return _receipt(await self._authed(self._stub.Pay, request))

    async def list_transactions(self, page_size: int = 20, page_token: str = "") -> TransactionPage:
        reply = await self._authed(
            self._stub.ListTransactions,
            wallet_pb2.ListTransactionsRequest(page_size=page_size, page_token=page_token),
        )
        return TransactionPage(
            transactions=[_transaction(t) for t in reply.transactions],
            next_page_token=reply.next_page_token,
        )


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel to the PSP (loopback or the shop's network), keep-alive on."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ],
    )
