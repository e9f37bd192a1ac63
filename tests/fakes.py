"""In-memory stand-ins for the apps' clients.

``FakePspClient`` is the till's PSP: payments, idempotency by key, an event log with cursors
and a live tail, and switches to take it down, make it hang or fail a call.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial

from pos_terminal.client import (
    Batch,
    CardInfo,
    ClientError,
    DailySummary,
    EventType,
    Merchant,
    MethodTotal,
    Payment,
    PaymentEvent,
    PaymentMethod,
    PaymentPage,
    PaymentStatus,
    RefundInfo,
    StaticQr,
)
from psp_server.domain.money import Money

UNAVAILABLE = ClientError("UNAVAILABLE", "connection refused", "UNAVAILABLE")
NOT_YET = ClientError("UNIMPLEMENTED", "card rail not available", "UNIMPLEMENTED")

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def fake_payload(payment_id: str, amount: Money, order_id: str) -> str:
    """A QR-alphanumeric payload shaped like the PSP's (not a valid EMV code)."""
    body = f"00020101021226300011COM.SCANPAY01{len(payment_id):02d}{payment_id.upper()}"
    body += f"5303978540{len(amount.decimal_string())}{amount.decimal_string()}"
    body += f"62{len(order_id) + 4:02d}01{len(order_id):02d}{order_id}6304"
    return "".join(c if c in _ALNUM + " $%*+-./:" else "-" for c in body) + "ABCD"


@dataclass
class Call:
    method: str
    kwargs: dict[str, object]


class FakePspClient:
    """A :class:`~pos_terminal.client.PspClient` in memory.

    - ``down = True``: every call (and the stream) fails with UNAVAILABLE.
    - ``wrong_key = True``: every call fails with INVALID_API_KEY.
    - ``hold(method)``: that call waits until ``release(method)`` (a request in flight).
    - ``fail_next(method, error)``: the next such call raises ``error``.
    - ``lose_next(method)``: the next such call happens but its answer is lost.
    - ``pay(payment_id)``, ``expire(...)``: what the wallet or the clock would do.
    """

    def __init__(self, merchant: Merchant | None = None, *, card_rail: bool = False) -> None:
        self.merchant = merchant or Merchant(
            id="mer_1",
            name="Corner Bakery",
            city="Berlin",
            country="DE",
            currency="EUR",
            mcc="5462",
            discount_rate_bps=150,
            terminal_id="ter_1",
            terminal_label="Till 1",
        )
        self.card_rail = card_rail
        self.down = False
        self.wrong_key = False
        self.payments: dict[str, Payment] = {}
        self.events: list[PaymentEvent] = []
        self.calls: list[Call] = []
        self.closed = False
        self._by_key: dict[tuple[str, str], tuple[object, object]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._holds: dict[str, asyncio.Event] = {}
        self._failures: dict[str, list[ClientError]] = {}
        self._lose: set[str] = set()
        self.streams_opened = 0
        self._stream_epoch = 0
        self.on_call: Callable[[str, dict[str, object]], None] | None = None

    # -- switches --------------------------------------------------------------------------

    def hold(self, method: str) -> None:
        self._holds[method] = asyncio.Event()

    def release(self, method: str) -> None:
        event = self._holds.pop(method, None)
        if event is not None:
            event.set()

    def fail_next(self, method: str, error: ClientError) -> None:
        self._failures.setdefault(method, []).append(error)

    def lose_next(self, method: str) -> None:
        """The next such call takes effect, but its answer is lost on the way back."""
        self._lose.add(method)

    def _answer(self, method: str, result: Payment) -> Payment:
        if method in self._lose:
            self._lose.discard(method)
            raise UNAVAILABLE
        return result

    async def go_down(self) -> None:
        """The PSP goes away: calls fail, open streams break."""
        self.down = True
        self._stream_epoch += 1
        async with self._changed:
            self._changed.notify_all()

    def go_up(self) -> None:
        self.down = False

    def count(self, method: str) -> int:
        return sum(1 for c in self.calls if c.method == method)

    async def _enter(self, method: str, **kwargs: object) -> None:
        self.calls.append(Call(method, kwargs))
        if self.on_call is not None:
            self.on_call(method, kwargs)
        held = self._holds.get(method)
        if held is not None:
            await held.wait()
        if self._failures.get(method):
            raise self._failures[method].pop(0)
        if self.down:
            raise UNAVAILABLE
        if self.wrong_key:
            raise ClientError("INVALID_API_KEY", "unknown API key", "UNAUTHENTICATED")

    # -- state changes -------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.now(UTC)

    async def _emit(self, payment: Payment, event_type: EventType) -> None:
        self.payments[payment.id] = payment
        cursor = f"{len(self.events) + 1:012d}"
        self.events.append(PaymentEvent(cursor, event_type, payment, self._now()))
        async with self._changed:
            self._changed.notify_all()

    def _get(self, payment_id: str) -> Payment:
        try:
            return self.payments[payment_id]
        except KeyError:
            raise ClientError("PAYMENT_NOT_FOUND", payment_id, "NOT_FOUND") from None

    def _replay(self, method: str, key: str, request: object) -> object | None:
        stored = self._by_key.get((method, key))
        if stored is None:
            return None
        if stored[0] != request:
            raise ClientError("IDEMPOTENCY_KEY_REUSED", key, "ALREADY_EXISTS")
        return stored[1]

    async def pay(self, payment_id: str, *, emit: bool = True) -> Payment:
        """The consumer pays (what WalletService.Pay would do)."""
        payment = self._get(payment_id)
        if payment.status != PaymentStatus.PENDING:
            raise ClientError("PAYMENT_ALREADY_PAID", payment_id, "FAILED_PRECONDITION")
        now = self._now()
        fee = payment.amount.percent_bps(self.merchant.discount_rate_bps)
        paid = replace(
            payment, status=PaymentStatus.SUCCEEDED, paid_at=now, updated_at=now, fee=fee
        )
        if emit:
            await self._emit(paid, EventType.SUCCEEDED)
        else:
            self.payments[payment_id] = paid
        return paid

    async def expire(self, payment_id: str) -> Payment:
        payment = self._get(payment_id)
        expired = replace(payment, status=PaymentStatus.EXPIRED, updated_at=self._now())
        await self._emit(expired, EventType.EXPIRED)
        return expired

    def add_card_payment(self, amount: Money, status=PaymentStatus.SUCCEEDED) -> Payment:
        n = next(self._ids)
        now = self._now()
        payment = Payment(
            id=f"pay_card{n}",
            order_id=f"CARD-{n}",
            amount=amount,
            status=status,
            method=PaymentMethod.CARD,
            created_at=now,
            paid_at=now,
            updated_at=now,
            card=CardInfo("411111******1111", "Visa", "1111", auth_code="A1B2C3"),
        )
        self.payments[payment.id] = payment
        return payment

    # -- PspClient ----------------------------------------------------------------------------

    async def get_merchant(self) -> Merchant:
        await self._enter("get_merchant")
        return self.merchant

    async def create_payment(
        self,
        *,
        order_id: str,
        amount: Money,
        description: str,
        idempotency_key: str,
        expires_in_seconds: int = 0,
    ) -> Payment:
        request = (order_id, amount, description, expires_in_seconds)
        await self._enter("create_payment", order_id=order_id, key=idempotency_key)
        replayed = self._replay("create_payment", idempotency_key, request)
        if replayed is not None:
            return replayed  # type: ignore[return-value]
        if not amount.is_positive:
            raise ClientError("INVALID_AMOUNT", "amount must be positive", "INVALID_ARGUMENT")
        n = next(self._ids)
        now = self._now()
        payment_id = f"pay_{n:06d}"
        payment = Payment(
            id=payment_id,
            order_id=order_id,
            amount=amount,
            status=PaymentStatus.PENDING,
            method=PaymentMethod.QR_DYNAMIC,
            description=description,
            qr_payload=fake_payload(payment_id, amount, order_id),
            pay_url=f"https://pay.example/{payment_id}",
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in_seconds or 900),
            updated_at=now,
            merchant_id=self.merchant.id,
            terminal_id=self.merchant.terminal_id,
            terminal_label=self.merchant.terminal_label,
        )
        self._by_key["create_payment", idempotency_key] = (request, payment)
        await self._emit(payment, EventType.CREATED)
        return self._answer("create_payment", payment)

    async def get_payment(self, payment_id: str) -> Payment:
        await self._enter("get_payment", payment_id=payment_id)
        return self._get(payment_id)

    async def cancel_payment(self, payment_id: str, *, idempotency_key: str) -> Payment:
        await self._enter("cancel_payment", payment_id=payment_id, key=idempotency_key)
        replayed = self._replay("cancel_payment", idempotency_key, payment_id)
        if replayed is not None:
            return replayed  # type: ignore[return-value]
        payment = self._get(payment_id)
        if payment.status.is_paid:
            raise ClientError("PAYMENT_ALREADY_PAID", payment_id, "FAILED_PRECONDITION")
        if payment.status == PaymentStatus.EXPIRED:
            raise ClientError("PAYMENT_EXPIRED", payment_id, "FAILED_PRECONDITION")
        if payment.status == PaymentStatus.CANCELED:
            raise ClientError("PAYMENT_CANCELED", payment_id, "FAILED_PRECONDITION")
        canceled = replace(payment, status=PaymentStatus.CANCELED, updated_at=self._now())
        self._by_key["cancel_payment", idempotency_key] = (payment_id, canceled)
        await self._emit(canceled, EventType.CANCELED)
        return canceled

    async def list_payments(
        self,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        order_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> PaymentPage:
        await self._enter("list_payments", order_id=order_id)
        found = [
            p
            for p in self.payments.values()
            if (not order_id or p.order_id == order_id)
            and (created_from is None or (p.created_at and p.created_at >= created_from))
            and (created_to is None or (p.created_at and p.created_at < created_to))
        ]
        found.sort(key=lambda p: p.created_at or self._now(), reverse=True)
        return PaymentPage(tuple(found))

    async def refund_payment(
        self, payment_id: str, amount: Money, *, reason: str, idempotency_key: str
    ) -> Payment:
        request = (payment_id, amount, reason)
        await self._enter(
            "refund_payment", payment_id=payment_id, amount=amount, key=idempotency_key
        )
        replayed = self._replay("refund_payment", idempotency_key, request)
        if replayed is not None:
            return replayed  # type: ignore[return-value]
        payment = self._get(payment_id)
        if not amount.is_positive:
            raise ClientError("INVALID_AMOUNT", "amount must be positive", "INVALID_ARGUMENT")
        if amount > payment.refundable:
            raise ClientError("REFUND_EXCEEDS_CAPTURED", "too much", "FAILED_PRECONDITION")
        refunded = payment.refunded_amount + amount
        status = (
            PaymentStatus.REFUNDED
            if refunded == payment.amount
            else PaymentStatus.PARTIALLY_REFUNDED
        )
        refund = RefundInfo(f"rfd_{next(self._ids)}", amount, reason, self._now())
        updated = replace(
            payment,
            status=status,
            refunded=refunded,
            refunds=(*payment.refunds, refund),
            updated_at=self._now(),
        )
        self._by_key["refund_payment", idempotency_key] = (request, updated)
        await self._emit(updated, EventType.REFUNDED)
        return self._answer("refund_payment", updated)

    async def get_static_qr(self) -> StaticQr:
        await self._enter("get_static_qr")
        return StaticQr(
            qr_payload="00020101021126300011COM.SCANPAY0105MER-15204546253039785802DE"
            "5913CORNER BAKERY6006BERLIN6304ABCD",
            pay_url="https://pay.example/static/mer_1",
            merchant_name=self.merchant.name,
            terminal_label=self.merchant.terminal_label,
        )

    async def get_daily_summary(self, date: str = "") -> DailySummary:
        await self._enter("get_daily_summary")
        currency = self.merchant.currency
        zero = Money.zero(currency)
        paid = [p for p in self.payments.values() if p.status.is_paid]
        totals: dict[PaymentMethod, tuple[int, Money]] = {}
        for p in paid:
            count, gross = totals.get(p.method, (0, zero))
            totals[p.method] = (count + 1, gross + p.amount)
        gross = sum((p.amount for p in paid), zero)
        refunds = sum((p.refunded_amount for p in paid), zero)
        fees = sum((p.fee or zero for p in paid), zero)
        return DailySummary(
            date=date or self._now().date().isoformat(),
            totals=tuple(MethodTotal(m, c, g) for m, (c, g) in totals.items()),
            gross=gross,
            refunds=refunds,
            fees=fees,
            net=gross - refunds - fees,
            payment_count=len(paid),
            refund_count=sum(len(p.refunds) for p in paid),
        )

    async def watch_payments(
        self, after_cursor: str = "", *, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[PaymentEvent]:
        await self._enter("watch_payments", after_cursor=after_cursor)
        self.streams_opened += 1
        epoch = self._stream_epoch
        if on_open is not None:
            on_open()
        position = int(after_cursor) if after_cursor else 0
        while True:
            while position < len(self.events):
                if self._stream_epoch != epoch:
                    raise UNAVAILABLE
                event = self.events[position]
                position += 1
                yield event
            async with self._changed:
                await self._changed.wait_for(partial(self._news, position, epoch))
            if self._stream_epoch != epoch:
                raise UNAVAILABLE

    def _news(self, position: int, epoch: int) -> bool:
        return position < len(self.events) or self._stream_epoch != epoch

    async def swipe_card(
        self, *, track_data: str, amount: Money, order_id: str, idempotency_key: str
    ) -> Payment:
        # Only the fact of the call is recorded: never the track data.
        await self._enter("swipe_card", order_id=order_id)
        if not self.card_rail:
            raise NOT_YET
        replayed = self._replay("swipe_card", idempotency_key, (track_data, amount, order_id))
        if replayed is not None:
            return replayed  # type: ignore[return-value]
        n = next(self._ids)
        now = self._now()
        pan = track_data.split("^")[0][2:] if "^" in track_data else "0" * 16
        pan_tail = pan[-4:]
        declined = pan_tail == "0002"
        payment = Payment(
            id=f"pay_card{n}",
            order_id=order_id,
            amount=amount,
            status=PaymentStatus.DECLINED if declined else PaymentStatus.SUCCEEDED,
            method=PaymentMethod.CARD,
            created_at=now,
            paid_at=None if declined else now,
            updated_at=now,
            card=CardInfo(
                pan_masked=pan[:6] + "*" * (len(pan) - 10) + pan_tail,
                brand="Visa",
                last4=pan_tail,
                auth_code="" if declined else "A1B2C3",
                response_code="05" if declined else "00",
                response_text="Do not honor" if declined else "Approved",
            ),
        )
        self._by_key["swipe_card", idempotency_key] = ((track_data, amount, order_id), payment)
        await self._emit(payment, EventType.DECLINED if declined else EventType.SUCCEEDED)
        return payment

    async def void_payment(self, payment_id: str, *, idempotency_key: str) -> Payment:
        await self._enter("void_payment", payment_id=payment_id)
        if not self.card_rail:
            raise NOT_YET
        payment = self._get(payment_id)
        voided = replace(payment, status=PaymentStatus.VOIDED, updated_at=self._now())
        await self._emit(voided, EventType.VOIDED)
        return voided

    async def close_batch(self, *, idempotency_key: str) -> Batch:
        await self._enter("close_batch")
        if not self.card_rail:
            raise NOT_YET
        zero = Money.zero(self.merchant.currency)
        return Batch("bat_1", 0, zero, zero, zero, zero, self._now())

    async def close(self) -> None:
        self.closed = True
