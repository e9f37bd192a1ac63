"""Plain-text receipts for the screen (and a printer, one day)."""

from __future__ import annotations

from datetime import datetime

from pos_terminal.client import Merchant, Payment, PaymentMethod


def local_time(when: datetime | None) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "-"


def receipt_lines(payment: Payment, merchant: Merchant | None, width: int = 34) -> list[str]:
    """The receipt for ``payment``, each line at most ``width`` characters."""

    def row(label: str, value: str) -> str:
        room = max(1, width - len(label) - 1)
        return f"{label} {value[-room:]:>{room}}"

    lines: list[str] = []
    if merchant is not None:
        lines.append(merchant.name[:width])
        where = ", ".join(x for x in (merchant.city, merchant.country) if x)
        lines.append(f"{where} · {merchant.terminal_label}"[:width])
        lines.append("-" * width)
    if payment.description:
        for item in payment.description.split("; "):
            lines.append(item[:width])
        lines.append("-" * width)
    lines.append(row("TOTAL", payment.amount.format()))
    lines.append(row("Status", payment.status.label))
    method = payment.method.label
    if payment.method == PaymentMethod.CARD and payment.card is not None:
        method = f"{payment.card.brand} {payment.card.pan_masked}"
    lines.append(row("Paid by", method))
    if payment.card is not None and payment.card.auth_code:
        lines.append(row("Auth code", payment.card.auth_code))
    if payment.payer_amount is not None:
        lines.append(row("Payer paid", payment.payer_amount.format()))
    if payment.payer_reference:
        lines.append(row("Reference", payment.payer_reference))
    lines.append(row("Order", payment.order_id))
    lines.append(row("Payment", payment.id))
    lines.append(row("Created", local_time(payment.created_at)))
    if payment.paid_at:
        lines.append(row("Paid", local_time(payment.paid_at)))
    for refund in payment.refunds:
        lines.append(row("Refund", f"-{refund.amount.format()}"))
    if payment.refunded is not None and payment.refunded.is_positive:
        lines.append(row("Refunded", payment.refunded.format()))
        lines.append(row("Left", payment.refundable.format()))
    return lines
