"""The receipt after a successful payment."""

from __future__ import annotations

import flet as ft

from wallet_app.state import WalletState
from wallet_app.views.common import money, screen, when


@ft.component
def ReceiptView(state: WalletState) -> ft.Control:
    r = state.receipt
    if r is None:
        return screen("Receipt", ft.Text("No payment yet."), back=lambda _: state.done())
    lines: list[ft.Control] = [
        ft.Row(
            [
                ft.Icon(ft.Icons.CHECK_CIRCLE, color=ft.Colors.GREEN_700, size=40),
                ft.Text("Payment successful", size=20, key="receipt-title"),
            ]
        ),
        ft.Text(f"Paid {r.merchant_name}", size=16, key="receipt-merchant"),
        ft.Text(money(r.amount), size=32, key="receipt-amount"),
    ]
    if r.payer_amount is not None and r.payer_amount != r.amount:
        lines.append(
            ft.Text(
                f"Charged {money(r.payer_amount)} at {r.fx_rate} "
                f"{r.payer_amount.currency} per {r.amount.currency}",
                key="receipt-fx",
            )
        )
    if r.balance_after is not None:
        lines.append(ft.Text(f"New balance {money(r.balance_after)}", key="receipt-balance"))
    details = [
        ("Order", r.order_id),
        ("Payment", r.payment_id),
        ("Transaction", r.transaction_id),
        ("Time", when(r.paid_at)),
    ]
    lines += [ft.Text(f"{k}: {v}", size=12, selectable=True) for k, v in details if v]
    lines.append(ft.FilledButton("Done", on_click=lambda _: state.done(), key="done"))
    return screen("Receipt", *lines)
