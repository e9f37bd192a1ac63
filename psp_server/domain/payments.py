"""The payment aggregate and its state machine.

Dynamic QR:  PENDING -> SUCCEEDED | CANCELED | EXPIRED
             SUCCEEDED -> PARTIALLY_REFUNDED -> REFUNDED
Static QR:   created SUCCEEDED by the consumer's pay.
Card:        AUTHORIZED -> SUCCEEDED (capture) | VOIDED; DECLINED is terminal;
             SUCCEEDED -> VOIDED (reversal before the batch closes) | DISPUTED (chargeback).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from psp_server.domain.errors import InvalidTransition, PreconditionFailed, ValidationError
from psp_server.domain.money import Money


class PaymentStatus(StrEnum):
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
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_captured(self) -> bool:
        """Money moved to the merchant and not (fully) given back."""
        return self in (
            PaymentStatus.SUCCEEDED,
            PaymentStatus.PARTIALLY_REFUNDED,
            PaymentStatus.DISPUTED,
        )


_TERMINAL = frozenset(
    {
        PaymentStatus.CANCELED,
        PaymentStatus.EXPIRED,
        PaymentStatus.REFUNDED,
        PaymentStatus.DECLINED,
        PaymentStatus.VOIDED,
    }
)

_ALLOWED: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset(
        {PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED}
    ),
    PaymentStatus.SUCCEEDED: frozenset(
        {
            PaymentStatus.PARTIALLY_REFUNDED,
            PaymentStatus.REFUNDED,
            PaymentStatus.DISPUTED,
            PaymentStatus.VOIDED,
        }
    ),
    PaymentStatus.PARTIALLY_REFUNDED: frozenset(
        {PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED, PaymentStatus.DISPUTED}
    ),
    PaymentStatus.AUTHORIZED: frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.VOIDED}),
    PaymentStatus.DISPUTED: frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED}),
    PaymentStatus.CANCELED: frozenset(),
    PaymentStatus.EXPIRED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
    PaymentStatus.DECLINED: frozenset(),
    PaymentStatus.VOIDED: frozenset(),
}
assert set(_ALLOWED) == set(PaymentStatus)


class PaymentMethod(StrEnum):
    QR_DYNAMIC = "qr_dynamic"
    QR_STATIC = "qr_static"
    CARD = "card"


class EventType(StrEnum):
    CREATED = "created"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    VOIDED = "voided"
    DISPUTED = "disputed"


DEFAULT_EXPIRY = timedelta(minutes=15)
MIN_EXPIRY = timedelta(seconds=30)
MAX_EXPIRY = timedelta(hours=24)
MAX_ORDER_ID = 64
MAX_DESCRIPTION = 200
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    amount: Money
    payer_amount: Money
    fee_refund: Money
    reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Fx:
    payer_amount: Money
    rate: str
    locked_until: datetime


@dataclass(frozen=True, slots=True)
class CardInfo:
    """What a card payment shows: never more than the first 6 / last 4 digits."""

    pan_masked: str
    brand: str
    last4: str
    auth_code: str = ""
    response_code: str = ""
    response_text: str = ""
    network_transaction_id: str = ""


@dataclass(frozen=True, slots=True)
class Payer:
    consumer_id: str
    amount: Money


@dataclass(eq=False, slots=True)
class Payment:
    id: str
    merchant_id: str
    terminal_id: str | None
    terminal_label: str
    method: PaymentMethod
    status: PaymentStatus
    order_id: str
    amount: Money
    description: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    qr_token: str | None = None
    qr_payload: str = ""
    paid_at: datetime | None = None
    payer: Payer | None = None
    fx: Fx | None = None
    fee: Money | None = None
    refunded: Money | None = None
    payer_reference: str = ""
    refunds: list[Refund] = field(default_factory=list)
    version: int = 0
    card: CardInfo | None = None

    def __post_init__(self) -> None:
        if self.refunded is None:
            self.refunded = Money.zero(self.amount.currency)

    # -- queries ---------------------------------------------------------------------

    def is_expired_at(self, now: datetime) -> bool:
        return (
            self.status is PaymentStatus.PENDING
            and self.expires_at is not None
            and now >= self.expires_at
        )

    def effective_status(self, now: datetime) -> PaymentStatus:
        """What the payment is now, even if the expiry sweeper has not run yet."""
        return PaymentStatus.EXPIRED if self.is_expired_at(now) else self.status

    @property
    def refundable(self) -> Money:
        assert self.refunded is not None
        if not self.status.is_captured or self.status is PaymentStatus.DISPUTED:
            return Money.zero(self.amount.currency)
        return self.amount - self.refunded

    # -- transitions -----------------------------------------------------------------

    def _move(self, to: PaymentStatus, now: datetime) -> None:
        if to not in _ALLOWED[self.status]:
            raise InvalidTransition(
                f"payment {self.id} is {self.status.value}, cannot become {to.value}",
                payment_id=self.id,
                status=self.status.value,
            )
        self.status = to
        self.updated_at = now
        self.version += 1

    def check_payable(self, now: datetime) -> None:
        """Raise the specific reason why this QR payment cannot be paid now."""
        status = self.effective_status(now)
        if status is PaymentStatus.PENDING:
            return
        if status is PaymentStatus.EXPIRED:
            raise PreconditionFailed(
                "this QR code has expired", reason="PAYMENT_EXPIRED", payment_id=self.id
            )
        if status is PaymentStatus.CANCELED:
            raise PreconditionFailed(
                "this payment was canceled by the shop",
                reason="PAYMENT_CANCELED",
                payment_id=self.id,
            )
        if status.is_captured or status is PaymentStatus.REFUNDED:
            raise PreconditionFailed(
                "this QR code has already been paid",
                reason="PAYMENT_ALREADY_PAID",
                payment_id=self.id,
            )
        raise PreconditionFailed(
            f"payment is {status.value}", reason="PAYMENT_NOT_PAYABLE", payment_id=self.id
        )

    def succeed(self, now: datetime, payer: Payer, fee: Money, fx: Fx | None) -> None:
        self.check_payable(now)
        self._move(PaymentStatus.SUCCEEDED, now)
        self.paid_at = now
        self.payer = payer
        self.fee = fee
        self.fx = fx

    def cancel(self, now: datetime) -> None:
        status = self.effective_status(now)
        if status is PaymentStatus.EXPIRED:
            raise PreconditionFailed(
                "the payment has already expired", reason="PAYMENT_EXPIRED", payment_id=self.id
            )
        if status is not PaymentStatus.PENDING:
            if status.is_captured or status is PaymentStatus.REFUNDED:
                raise PreconditionFailed(
                    "the payment has already been paid; refund it instead",
                    reason="PAYMENT_ALREADY_PAID",
                    payment_id=self.id,
                )
            raise InvalidTransition(
                f"payment is {status.value}, cannot be canceled",
                payment_id=self.id,
                status=status.value,
            )
        self._move(PaymentStatus.CANCELED, now)

    def expire(self, now: datetime) -> None:
        if not self.is_expired_at(now):
            raise InvalidTransition(f"payment {self.id} is not due to expire")
        self._move(PaymentStatus.EXPIRED, now)

    def add_refund(self, refund: Refund, now: datetime) -> None:
        if refund.amount.amount_minor <= 0:
            raise ValidationError("refund amount must be positive", reason="INVALID_AMOUNT")
        if refund.amount.currency != self.amount.currency:
            raise ValidationError(
                f"refund must be in {self.amount.currency}", reason="CURRENCY_MISMATCH"
            )
        if not self.status.is_captured or self.status is PaymentStatus.DISPUTED:
            raise PreconditionFailed(
                f"payment is {self.status.value}; only a paid payment can be refunded",
                reason="PAYMENT_NOT_REFUNDABLE",
                payment_id=self.id,
            )
        if refund.amount > self.refundable:
            raise PreconditionFailed(
                f"refund of {refund.amount} exceeds the refundable {self.refundable}",
                reason="REFUND_EXCEEDS_CAPTURED",
                payment_id=self.id,
                refundable_minor=str(self.refundable.amount_minor),
            )
        assert self.refunded is not None
        self.refunded = self.refunded + refund.amount
        self.refunds.append(refund)
        full = self.refunded == self.amount
        self._move(PaymentStatus.REFUNDED if full else PaymentStatus.PARTIALLY_REFUNDED, now)

    def capture(self, now: datetime, amount: Money, fee: Money) -> None:
        """Card: the authorization is captured (``amount`` at most the authorized one)."""
        self._move(PaymentStatus.SUCCEEDED, now)
        self.amount = amount
        self.paid_at = now
        self.fee = fee

    def void(self, now: datetime) -> None:
        """Card: the hold is released, or the sale reversed before the batch closed."""
        assert self.refunded is not None
        if self.refunded.amount_minor:
            raise PreconditionFailed(
                "a refunded payment cannot be voided", reason="PAYMENT_NOT_VOIDABLE"
            )
        self._move(PaymentStatus.VOIDED, now)

    def dispute(self, now: datetime) -> None:
        """Card: the network charged the payment back."""
        self._move(PaymentStatus.DISPUTED, now)

    def resolve_dispute(self, now: datetime, *, won: bool) -> None:
        self._move(PaymentStatus.SUCCEEDED if won else PaymentStatus.REFUNDED, now)
        if not won:
            self.refunded = self.amount

    def copy(self) -> Payment:
        return replace(self, refunds=list(self.refunds))


def fee_refund_for(payment: Payment, refund_amount: Money) -> Money:
    """The share of the original fee given back with a refund, so that refunding
    everything gives back the whole fee and nothing is lost to rounding."""
    fee = payment.fee or Money.zero(payment.amount.currency)
    assert payment.refunded is not None
    before = payment.refunded.amount_minor
    after = before + refund_amount.amount_minor
    total = payment.amount.amount_minor
    given_before = fee.amount_minor * before // total
    given_after = fee.amount_minor * after // total
    return Money(given_after - given_before, fee.currency)


def payer_refund_for(payment: Payment, refund_amount: Money) -> Money:
    """What goes back to the payer's wallet, in the wallet currency: proportional to the
    amount charged at the locked rate, cumulative so that a full refund returns exactly
    what was charged."""
    assert payment.payer is not None and payment.refunded is not None
    charged = payment.payer.amount.amount_minor
    total = payment.amount.amount_minor
    before = payment.refunded.amount_minor
    after = before + refund_amount.amount_minor
    return Money(
        charged * after // total - charged * before // total, payment.payer.amount.currency
    )


def snapshot(payment: Payment) -> dict[str, Any]:
    """A JSON-able picture of the payment, stored with each event."""

    def m(x: Money | None) -> list[Any] | None:
        return None if x is None else [x.amount_minor, x.currency]

    def t(x: datetime | None) -> str | None:
        return None if x is None else x.isoformat()

    return {
        "id": payment.id,
        "merchant_id": payment.merchant_id,
        "terminal_id": payment.terminal_id,
        "terminal_label": payment.terminal_label,
        "method": payment.method.value,
        "status": payment.status.value,
        "order_id": payment.order_id,
        "amount": m(payment.amount),
        "description": payment.description,
        "created_at": t(payment.created_at),
        "updated_at": t(payment.updated_at),
        "expires_at": t(payment.expires_at),
        "qr_payload": payment.qr_payload,
        "qr_token": payment.qr_token,
        "paid_at": t(payment.paid_at),
        "payer": None
        if payment.payer is None
        else [payment.payer.consumer_id, m(payment.payer.amount)],
        "fx": None
        if payment.fx is None
        else [m(payment.fx.payer_amount), payment.fx.rate, t(payment.fx.locked_until)],
        "fee": m(payment.fee),
        "refunded": m(payment.refunded),
        "payer_reference": payment.payer_reference,
        "refunds": [
            [r.id, m(r.amount), m(r.payer_amount), m(r.fee_refund), r.reason, t(r.created_at)]
            for r in payment.refunds
        ],
        "version": payment.version,
        "card": None
        if payment.card is None
        else [
            payment.card.pan_masked,
            payment.card.brand,
            payment.card.last4,
            payment.card.auth_code,
            payment.card.response_code,
            payment.card.response_text,
            payment.card.network_transaction_id,
        ],
    }


def from_snapshot(data: dict[str, Any]) -> Payment:
    def m(x: list[Any] | None) -> Money | None:
        return None if x is None else Money(int(x[0]), str(x[1]))

    def mm(x: list[Any]) -> Money:
        return Money(int(x[0]), str(x[1]))

    def t(x: str | None) -> datetime | None:
        return None if x is None else datetime.fromisoformat(x)

    def tt(x: str) -> datetime:
        return datetime.fromisoformat(x)

    payer = data["payer"]
    fx = data["fx"]
    card = data.get("card")
    return Payment(
        id=data["id"],
        merchant_id=data["merchant_id"],
        terminal_id=data["terminal_id"],
        terminal_label=data["terminal_label"],
        method=PaymentMethod(data["method"]),
        status=PaymentStatus(data["status"]),
        order_id=data["order_id"],
        amount=mm(data["amount"]),
        description=data["description"],
        created_at=tt(data["created_at"]),
        updated_at=tt(data["updated_at"]),
        expires_at=t(data["expires_at"]),
        qr_payload=data["qr_payload"],
        qr_token=data.get("qr_token"),
        paid_at=t(data["paid_at"]),
        payer=None if payer is None else Payer(payer[0], mm(payer[1])),
        fx=None if fx is None else Fx(mm(fx[0]), fx[1], tt(fx[2])),
        fee=m(data["fee"]),
        refunded=m(data["refunded"]),
        payer_reference=data["payer_reference"],
        refunds=[
            Refund(r[0], mm(r[1]), mm(r[2]), mm(r[3]), r[4], tt(r[5])) for r in data["refunds"]
        ],
        version=data["version"],
        card=None if card is None else CardInfo(*[str(x) for x in card]),
    )
