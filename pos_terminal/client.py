"""The till's view of the PSP: a ``PspClient`` protocol and its gRPC implementation.

Screens talk to a :class:`PspClient` and get plain dataclasses back; only this module
knows about the generated ``_pb2`` types. Every failure is a :class:`ClientError` whose
``reason`` is the server's stable ``google.rpc.ErrorInfo`` reason (or the gRPC code name when
the server sent none, e.g. ``UNAVAILABLE`` when the PSP cannot be reached).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar, cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from protos.scanpay.v1 import common_pb2, merchant_pb2, merchant_pb2_grpc
from psp_server.domain.money import Money

T = TypeVar("T")


class PaymentStatus(StrEnum):
    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"
    EXPIRED = "expired"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    VOIDED = "voided"
    DISPUTED = "disputed"

    @property
    def is_final(self) -> bool:
        """No further change is expected at the counter (refunds may still follow)."""
        return self not in (PaymentStatus.PENDING, PaymentStatus.UNSPECIFIED)

    @property
    def is_paid(self) -> bool:
        return self in (
            PaymentStatus.SUCCEEDED,
            PaymentStatus.PARTIALLY_REFUNDED,
            PaymentStatus.REFUNDED,
            PaymentStatus.DISPUTED,
        )

    @property
    def label(self) -> str:
        return {
            PaymentStatus.SUCCEEDED: "PAID",
            PaymentStatus.PARTIALLY_REFUNDED: "PART REFUNDED",
        }.get(self, self.value.upper())


class PaymentMethod(StrEnum):
    UNSPECIFIED = "unspecified"
    QR_DYNAMIC = "qr_dynamic"
    QR_STATIC = "qr_static"
    CARD = "card"

    @property
    def label(self) -> str:
        return {
            PaymentMethod.QR_DYNAMIC: "QR",
            PaymentMethod.QR_STATIC: "Static QR",
            PaymentMethod.CARD: "Card",
        }.get(self, "?")


class EventType(StrEnum):
    UNSPECIFIED = "unspecified"
    CREATED = "created"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    VOIDED = "voided"
    DISPUTED = "disputed"


class ClientError(Exception):
    """A failed call. ``reason`` is stable (``PAYMENT_EXPIRED``); ``code`` is the gRPC code name."""

    def __init__(self, reason: str, message: str = "", code: str = "UNKNOWN") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message
        self.code = code

    @property
    def unavailable(self) -> bool:
        return self.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")

    @property
    def unimplemented(self) -> bool:
        return self.code == "UNIMPLEMENTED"

    @property
    def from_psp(self) -> bool:
        """The PSP answered with a reason of its own (``CARD_NETWORK_TIMEOUT``), as opposed
        to a transport failure (no answer at all: the reason is the bare gRPC code)."""
        return self.reason != self.code

    @property
    def unreachable(self) -> bool:
        """The PSP itself could not be reached or did not answer in time."""
        return self.unavailable and not self.from_psp

    @property
    def card_network(self) -> bool:
        """The PSP answered, but the card network behind it did not (or is switched off):
        ``CARD_NETWORK_TIMEOUT`` (sent, answer lost, reversed: nothing charged) or
        ``CARD_NETWORK_UNAVAILABLE`` (nothing sent)."""
        return self.reason in ("CARD_NETWORK_TIMEOUT", "CARD_NETWORK_UNAVAILABLE")


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    city: str
    country: str
    currency: str
    mcc: str = ""
    discount_rate_bps: int = 0
    terminal_id: str = ""
    terminal_label: str = ""


@dataclass(frozen=True, slots=True)
class CardInfo:
    pan_masked: str
    brand: str
    last4: str
    auth_code: str = ""
    response_code: str = ""
    response_text: str = ""


@dataclass(frozen=True, slots=True)
class RefundInfo:
    id: str
    amount: Money
    reason: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    order_id: str
    amount: Money
    status: PaymentStatus
    method: PaymentMethod = PaymentMethod.QR_DYNAMIC
    description: str = ""
    qr_payload: str = ""
    pay_url: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    paid_at: datetime | None = None
    updated_at: datetime | None = None
    refunded: Money | None = None
    fee: Money | None = None
    merchant_id: str = ""
    terminal_id: str = ""
    terminal_label: str = ""
    refunds: tuple[RefundInfo, ...] = ()
    card: CardInfo | None = None
    payer_reference: str = ""
    payer_amount: Money | None = None

    @property
    def refunded_amount(self) -> Money:
        return self.refunded if self.refunded is not None else Money.zero(self.amount.currency)

    @property
    def refundable(self) -> Money:
        if self.status not in (PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED):
            return Money.zero(self.amount.currency)
        return self.amount - self.refunded_amount


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    cursor: str
    type: EventType
    payment: Payment
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StaticQr:
    qr_payload: str
    pay_url: str
    merchant_name: str
    terminal_label: str


@dataclass(frozen=True, slots=True)
class MethodTotal:
    method: PaymentMethod
    count: int
    gross: Money


@dataclass(frozen=True, slots=True)
class DailySummary:
    date: str
    totals: tuple[MethodTotal, ...]
    gross: Money
    refunds: Money
    fees: Money
    net: Money
    payment_count: int
    refund_count: int


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    count: int
    gross: Money
    interchange: Money
    scheme_fees: Money
    net: Money
    closed_at: datetime | None = None
    settlement_file: str = ""


@dataclass(frozen=True, slots=True)
class PaymentPage:
    payments: tuple[Payment, ...]
    next_page_token: str = ""


class PspClient(Protocol):
    """What the till needs from the PSP. Mutating calls take the caller's idempotency key."""

    async def get_merchant(self) -> Merchant: ...

    async def create_payment(
        self,
        *,
        order_id: str,
        amount: Money,
        description: str,
        idempotency_key: str,
        expires_in_seconds: int = 0,
    ) -> Payment: ...

    async def get_payment(self, payment_id: str) -> Payment: ...

    async def cancel_payment(self, payment_id: str, *, idempotency_key: str) -> Payment: ...

    async def list_payments(
        self,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        order_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> PaymentPage: ...

    async def refund_payment(
        self, payment_id: str, amount: Money, *, reason: str, idempotency_key: str
    ) -> Payment: ...

    async def get_static_qr(self) -> StaticQr: ...

    async def get_daily_summary(self, date: str = "") -> DailySummary: ...

    def watch_payments(
        self, after_cursor: str = "", *, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[PaymentEvent]:
        """Replay events after ``after_cursor``, then tail live; ``on_open`` once connected.

        Never ends by itself: a dropped stream raises ``ClientError`` (``UNAVAILABLE``).
        """
        ...

    async def swipe_card(
        self, *, track_data: str, amount: Money, order_id: str, idempotency_key: str
    ) -> Payment: ...

    async def void_payment(self, payment_id: str, *, idempotency_key: str) -> Payment: ...

    async def close_batch(self, *, idempotency_key: str) -> Batch: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for calls that are safe to repeat."""

    attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    #: A repeat waits this long for the channel to (re)connect before it gives up: the first
    #: attempt fails fast, so a PSP that is down is reported quickly, and one that just came
    #: back is reached without the cashier having to try again.
    reconnect_wait: float = 1.0

    def delays(self) -> list[float]:
        out, delay = [], self.initial_backoff
        for _ in range(self.attempts - 1):
            out.append(random.uniform(delay / 2, delay))
            delay = min(delay * self.multiplier, self.max_backoff)
        return out


@dataclass(slots=True)
class Deadlines:
    """Per-call deadlines in seconds."""

    read: float = 5.0
    write: float = 10.0
    card: float = 60.0
    connect: float = 3.0
    extra: dict[str, float] = field(default_factory=dict)


_RETRYABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


async def with_retries(
    call: Callable[[int], Awaitable[T]], policy: RetryPolicy, *, retry_deadline: bool = True
) -> T:
    """Run ``call(attempt)`` and repeat it on UNAVAILABLE (and DEADLINE_EXCEEDED if allowed)."""
    delays = policy.delays()
    attempt = 0
    while True:
        try:
            return await call(attempt)
        except ClientError as exc:
            # Only transport failures are repeated. An UNAVAILABLE the PSP answered with a
            # reason of its own (the card network timed out and was reversed, a request still
            # in progress) is an outcome for the screen to show, not a dropped connection.
            retryable = not exc.from_psp and (
                exc.code == "UNAVAILABLE" or (retry_deadline and exc.code in _RETRYABLE_CODES)
            )
            if not retryable or not delays:
                raise
            await asyncio.sleep(delays.pop(0))
            attempt += 1


# ---------------------------------------------------------------------------
# gRPC implementation
# ---------------------------------------------------------------------------


def _ts(ts: object) -> datetime | None:
    seconds = getattr(ts, "seconds", 0)
    nanos = getattr(ts, "nanos", 0)
    if not seconds and not nanos:
        return None
    return datetime.fromtimestamp(seconds + nanos / 1e9, tz=UTC)


class GrpcPspClient:
    """:class:`PspClient` over ``grpc.aio`` for one terminal API key.

    The channel is created lazily on the caller's event loop (grpc.aio channels are bound to
    the loop that made them).
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        retry: RetryPolicy | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.target = target
        self._api_key = api_key
        self.retry = retry or RetryPolicy()
        self.deadlines = deadlines or Deadlines()
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    # -- plumbing -------------------------------------------------------------

    def _get_stub(self) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                self.target,
                options=[
                    ("grpc.keepalive_time_ms", 10_000),
                    ("grpc.keepalive_timeout_ms", 5_000),
                    ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1_000),
                    ("grpc.min_reconnect_backoff_ms", 100),
                ],
            )
            self._stub = merchant_pb2_grpc.MerchantServiceStub(self._channel)
        return self._stub

    def _ready(self) -> bool:
        channel = self._channel
        return channel is not None and (channel.get_state() == grpc.ChannelConnectivity.READY)

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._api_key}"),)

    @staticmethod
    def _error(exc: BaseException) -> ClientError:
        if not isinstance(exc, grpc.RpcError):
            return ClientError("UNKNOWN", str(exc))
        call = cast(Any, exc)  # grpc.aio.AioRpcError: code(), details(), trailing_metadata()
        code = call.code()
        code_name = code.name if code is not None else "UNKNOWN"
        message = call.details() or ""
        reason = code_name
        try:
            status = rpc_status.from_call(call)
        except (ValueError, TypeError):
            status = None
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason or reason
                    break
        return ClientError(reason, message, code_name)

    async def _unary(self, method: str, request: Any, *, timeout: float) -> Any:
        rpc = getattr(self._get_stub(), method)

        async def once(attempt: int) -> Any:
            repeat = attempt > 0
            try:
                return await rpc(
                    request,
                    timeout=min(timeout, self.retry.reconnect_wait) if repeat else timeout,
                    metadata=self._metadata,
                    wait_for_ready=repeat,
                )
            except grpc.RpcError as exc:
                error = self._error(exc)
                if repeat and error.code == "DEADLINE_EXCEEDED" and not self._ready():
                    # Waited for a channel that never came up: the PSP is unreachable.
                    raise ClientError("UNAVAILABLE", error.message, "UNAVAILABLE") from None
                raise error from None

        # Every call is safe to repeat: reads by nature, writes by their idempotency key.
        return await with_retries(once, self.retry)

    # -- mapping ----------------------------------------------------------------

    @staticmethod
    def _money(msg: object) -> Money | None:
        currency = getattr(msg, "currency", "")
        if not currency:
            return None
        return Money(int(getattr(msg, "amount_minor", 0)), currency)

    @classmethod
    def _payment(cls, p: Any) -> Payment:
        amount = cls._money(p.amount) or Money(0, "EUR")
        card = None
        if p.HasField("card") and (p.card.pan_masked or p.card.last4):
            card = CardInfo(
                pan_masked=p.card.pan_masked,
                brand=p.card.brand,
                last4=p.card.last4,
                auth_code=p.card.auth_code,
                response_code=p.card.response_code,
                response_text=p.card.response_text,
            )
        status_name = common_pb2.PaymentStatus.Name(p.status).removeprefix("PAYMENT_STATUS_")
        method_name = common_pb2.PaymentMethod.Name(p.method).removeprefix("PAYMENT_METHOD_")
        return Payment(
            id=p.id,
            order_id=p.order_id,
            amount=amount,
            status=PaymentStatus(status_name.lower()),
            method=PaymentMethod(method_name.lower()),
            description=p.description,
            qr_payload=p.qr_payload,
            pay_url=p.pay_url,
            created_at=_ts(p.created_at),
            expires_at=_ts(p.expires_at),
            paid_at=_ts(p.paid_at),
            updated_at=_ts(p.updated_at),
            refunded=cls._money(p.refunded),
            fee=cls._money(p.fee),
            merchant_id=p.merchant_id,
            terminal_id=p.terminal_id,
            terminal_label=p.terminal_label,
            refunds=tuple(
                RefundInfo(
                    id=r.id,
                    amount=cls._money(r.amount) or Money.zero(amount.currency),
                    reason=r.reason,
                    created_at=_ts(r.created_at),
                )
                for r in p.refunds
            ),
            card=card,
            payer_reference=p.payer_reference,
            payer_amount=cls._money(p.fx.payer_amount) if p.HasField("fx") else None,
        )

    @staticmethod
    def _proto_money(money: Money) -> common_pb2.Money:
        return common_pb2.Money(amount_minor=money.amount_minor, currency=money.currency)

    # -- PspClient ----------------------------------------------------------------

    async def get_merchant(self) -> Merchant:
        m = await self._unary(
            "GetMerchant", merchant_pb2.GetMerchantRequest(), timeout=self.deadlines.connect
        )
        return Merchant(
            id=m.id,
            name=m.name,
            city=m.city,
            country=m.country,
            currency=m.currency,
            mcc=m.mcc,
            discount_rate_bps=m.discount_rate_bps,
            terminal_id=m.terminal_id,
            terminal_label=m.terminal_label,
        )

    async def create_payment(
        self,
        *,
        order_id: str,
        amount: Money,
        description: str,
        idempotency_key: str,
        expires_in_seconds: int = 0,
    ) -> Payment:
        request = merchant_pb2.CreatePaymentRequest(
            order_id=order_id,
            amount=self._proto_money(amount),
            description=description,
            expires_in_seconds=expires_in_seconds,
            idempotency_key=idempotency_key,
        )
        return self._payment(
            await self._unary("CreatePayment", request, timeout=self.deadlines.write)
        )

    async def get_payment(self, payment_id: str) -> Payment:
        request = merchant_pb2.GetPaymentRequest(payment_id=payment_id)
        return self._payment(await self._unary("GetPayment", request, timeout=self.deadlines.read))

    async def cancel_payment(self, payment_id: str, *, idempotency_key: str) -> Payment:
        request = merchant_pb2.CancelPaymentRequest(
            payment_id=payment_id, idempotency_key=idempotency_key
        )
        return self._payment(
            await self._unary("CancelPayment", request, timeout=self.deadlines.write)
        )

    async def list_payments(
        self,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        order_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> PaymentPage:
        request = merchant_pb2.ListPaymentsRequest(
            page_size=page_size, page_token=page_token, order_id=order_id
        )
        if created_from is not None:
            request.created_from.FromDatetime(created_from.astimezone(UTC))
        if created_to is not None:
            request.created_to.FromDatetime(created_to.astimezone(UTC))
        response = await self._unary("ListPayments", request, timeout=self.deadlines.read)
        return PaymentPage(
            payments=tuple(self._payment(p) for p in response.payments),
            next_page_token=response.next_page_token,
        )

    async def refund_payment(
        self, payment_id: str, amount: Money, *, reason: str, idempotency_key: str
    ) -> Payment:
        request = merchant_pb2.RefundPaymentRequest(
            payment_id=payment_id,
            amount=self._proto_money(amount),
            reason=reason,
            idempotency_key=idempotency_key,
        )
        return self._payment(
            await self._unary("RefundPayment", request, timeout=self.deadlines.write)
        )

    async def get_static_qr(self) -> StaticQr:
        r = await self._unary(
            "GetStaticQr", merchant_pb2.GetStaticQrRequest(), timeout=self.deadlines.read
        )
        return StaticQr(
            qr_payload=r.qr_payload,
            pay_url=r.pay_url,
            merchant_name=r.merchant_name,
            terminal_label=r.terminal_label,
        )

    async def get_daily_summary(self, date: str = "") -> DailySummary:
        r = await self._unary(
            "GetDailySummary",
            merchant_pb2.GetDailySummaryRequest(date=date),
            timeout=self.deadlines.read,
        )
        gross = self._money(r.gross)
        currency = gross.currency if gross else "EUR"

        def money(msg: object) -> Money:
            return self._money(msg) or Money.zero(currency)

        totals = tuple(
            MethodTotal(
                method=PaymentMethod(
                    common_pb2.PaymentMethod.Name(t.method).removeprefix("PAYMENT_METHOD_").lower()
                ),
                count=t.count,
                gross=money(t.gross),
            )
            for t in r.totals
        )
        return DailySummary(
            date=r.date,
            totals=totals,
            gross=money(r.gross),
            refunds=money(r.refunds),
            fees=money(r.fees),
            net=money(r.net),
            payment_count=r.payment_count,
            refund_count=r.refund_count,
        )

    async def watch_payments(
        self, after_cursor: str = "", *, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[PaymentEvent]:
        stub = self._get_stub()
        call = stub.WatchPayments(
            merchant_pb2.WatchPaymentsRequest(after_cursor=after_cursor),
            metadata=self._metadata,
        )
        opener = asyncio.ensure_future(self._when_ready(call, on_open))
        try:
            async for event in call:
                type_name = merchant_pb2.PaymentEventType.Name(event.type)
                yield PaymentEvent(
                    cursor=event.cursor,
                    type=EventType(type_name.removeprefix("PAYMENT_EVENT_TYPE_").lower()),
                    payment=self._payment(event.payment),
                    occurred_at=_ts(event.occurred_at),
                )
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            opener.cancel()
            call.cancel()
        # The server never ends the stream on its own; treat an end as a dropped connection.
        raise ClientError("UNAVAILABLE", "the payment stream ended", "UNAVAILABLE")

    async def _when_ready(self, call: Any, on_open: Callable[[], None] | None) -> None:
        """Call ``on_open`` once the channel is connected and the stream still stands.

        The server sends its first bytes with the first event, which may be a long time
        coming; a READY channel carrying a live call is what "online" means here.
        """
        if on_open is None or self._channel is None:
            return
        channel = self._channel
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)
        if not call.done():
            on_open()

    async def swipe_card(
        self, *, track_data: str, amount: Money, order_id: str, idempotency_key: str
    ) -> Payment:
        request = merchant_pb2.SwipeCardRequest(
            track_data=track_data,
            amount=self._proto_money(amount),
            order_id=order_id,
            action=merchant_pb2.CARD_ACTION_SALE,
            idempotency_key=idempotency_key,
        )
        return self._payment(await self._unary("SwipeCard", request, timeout=self.deadlines.card))

    async def void_payment(self, payment_id: str, *, idempotency_key: str) -> Payment:
        request = merchant_pb2.VoidPaymentRequest(
            payment_id=payment_id, idempotency_key=idempotency_key
        )
        return self._payment(await self._unary("VoidPayment", request, timeout=self.deadlines.card))

    async def close_batch(self, *, idempotency_key: str) -> Batch:
        r = await self._unary(
            "CloseBatch",
            merchant_pb2.CloseBatchRequest(idempotency_key=idempotency_key),
            timeout=self.deadlines.card,
        )
        gross = self._money(r.gross)
        currency = gross.currency if gross else "EUR"

        def money(msg: object) -> Money:
            return self._money(msg) or Money.zero(currency)

        return Batch(
            id=r.id,
            count=r.count,
            gross=money(r.gross),
            interchange=money(r.interchange),
            scheme_fees=money(r.scheme_fees),
            net=money(r.net),
            closed_at=_ts(r.closed_at),
            settlement_file=r.settlement_file,
        )

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()
