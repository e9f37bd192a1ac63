from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from psp_server.domain.errors import InvalidTransition, PreconditionFailed
from psp_server.domain.money import Money
from psp_server.domain.payments import (
    _ALLOWED,
    Payer,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    fee_refund_for,
    from_snapshot,
    payer_refund_for,
    snapshot,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def pending(amount: int = 1000, ttl: timedelta = timedelta(minutes=15)) -> Payment:
    return Payment(
        id="pay_01M80Q57Z44X69197ZXG433930",
        merchant_id="mer_1",
        terminal_id="trm_1",
        terminal_label="Till 1",
        method=PaymentMethod.QR_DYNAMIC,
        status=PaymentStatus.PENDING,
        order_id="A-1",
        amount=Money(amount, "EUR"),
        description="",
        created_at=NOW,
        updated_at=NOW,
        expires_at=NOW + ttl,
    )


def paid(amount: int = 1000, fee: int = 10) -> Payment:
    p = pending(amount)
    p.succeed(NOW, Payer("con_1", Money(amount, "EUR")), Money(fee, "EUR"), None)
    return p


def refund(p: Payment, amount: int) -> Refund:
    m = Money(amount, "EUR")
    return Refund("ref_x", m, payer_refund_for(p, m), fee_refund_for(p, m), "", NOW)


def test_every_status_has_rules_and_terminal_states_go_nowhere() -> None:
    assert set(_ALLOWED) == set(PaymentStatus)
    for status, targets in _ALLOWED.items():
        if status.is_terminal:
            assert targets == frozenset()


def test_paid_once_ever() -> None:
    p = paid()
    with pytest.raises(PreconditionFailed) as exc:
        p.succeed(NOW, Payer("con_2", Money(1000, "EUR")), Money(10, "EUR"), None)
    assert exc.value.reason == "PAYMENT_ALREADY_PAID"


def test_expiry_holds_at_pay_time_without_a_sweeper() -> None:
    p = pending(ttl=timedelta(seconds=30))
    assert p.effective_status(NOW + timedelta(seconds=29)) is PaymentStatus.PENDING
    assert p.effective_status(NOW + timedelta(seconds=30)) is PaymentStatus.EXPIRED
    with pytest.raises(PreconditionFailed) as exc:
        p.succeed(
            NOW + timedelta(seconds=30), Payer("c", Money(1000, "EUR")), Money(0, "EUR"), None
        )
    assert exc.value.reason == "PAYMENT_EXPIRED"
    assert p.status is PaymentStatus.PENDING  # nothing changed


def test_cancel_then_pay_says_canceled() -> None:
    p = pending()
    p.cancel(NOW)
    with pytest.raises(PreconditionFailed) as exc:
        p.check_payable(NOW)
    assert exc.value.reason == "PAYMENT_CANCELED"
    with pytest.raises(InvalidTransition):
        p.cancel(NOW)


def test_cancel_paid_says_refund_instead() -> None:
    with pytest.raises(PreconditionFailed) as exc:
        paid().cancel(NOW)
    assert exc.value.reason == "PAYMENT_ALREADY_PAID"


def test_partial_then_full_refund_and_never_more() -> None:
    p = paid(1000, fee=10)
    r1 = refund(p, 300)
    p.add_refund(r1, NOW)
    assert p.status is PaymentStatus.PARTIALLY_REFUNDED
    r2 = refund(p, 700)
    p.add_refund(r2, NOW)
    assert p.status is PaymentStatus.REFUNDED
    assert r1.fee_refund.amount_minor + r2.fee_refund.amount_minor == 10
    with pytest.raises(PreconditionFailed):
        p.add_refund(refund(p, 1), NOW)


def test_refund_more_than_captured_changes_nothing() -> None:
    p = paid(1000)
    with pytest.raises(PreconditionFailed) as exc:
        p.add_refund(refund(p, 1001), NOW)
    assert exc.value.reason == "REFUND_EXCEEDS_CAPTURED"
    assert p.status is PaymentStatus.SUCCEEDED
    assert p.refunded == Money(0, "EUR")


def test_refunding_a_pending_payment_is_refused() -> None:
    p = pending()
    with pytest.raises(PreconditionFailed) as exc:
        p.add_refund(Refund("r", Money(1, "EUR"), Money(1, "EUR"), Money(0, "EUR"), "", NOW), NOW)
    assert exc.value.reason == "PAYMENT_NOT_REFUNDABLE"


def test_snapshot_round_trip() -> None:
    p = paid()
    p.add_refund(refund(p, 250), NOW)
    again = from_snapshot(snapshot(p))
    assert snapshot(again) == snapshot(p)
