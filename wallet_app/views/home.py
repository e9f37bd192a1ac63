"""Home: the balance, top-up, and the latest transactions."""

from __future__ import annotations

import flet as ft

from wallet_app.client import Transaction
from wallet_app.state import HISTORY, WalletState
from wallet_app.views.common import Banner, busy_ring, money, screen, when

_KIND = {
    "payment": (ft.Icons.SHOPPING_BAG_OUTLINED, "Payment"),
    "refund": (ft.Icons.UNDO, "Refund"),
    "top_up": (ft.Icons.ACCOUNT_BALANCE, "Top-up"),
}


@ft.component
def TransactionRow(t: Transaction) -> ft.Control:
    icon, label = _KIND.get(t.kind, (ft.Icons.SWAP_HORIZ, t.kind))
    title = t.merchant_name or label
    subtitle = " · ".join(p for p in (label, t.description, when(t.created_at)) if p)
    color = ft.Colors.GREEN_800 if t.amount.amount_minor > 0 else None
    sign = "+" if t.amount.amount_minor > 0 else ""
    return ft.ListTile(
        leading=ft.Icon(icon),
        title=ft.Text(title),
        subtitle=ft.Text(subtitle),
        trailing=ft.Text(f"{sign}{t.amount.format()}", color=color, weight=ft.FontWeight.W_500),
        key=f"txn-{t.id}",
    )


@ft.component
def Home(state: WalletState) -> ft.Control:
    topup, set_topup = ft.use_state("")
    b = state.balance
    who = state.consumer.display_name or state.consumer.email if state.consumer else ""

    async def do_topup(_=None):
        if await state.top_up(topup):
            set_topup("")

    limits = None
    if b is not None and b.per_payment_limit is not None:
        spent = f", spent today {money(b.spent_today)}" if b.spent_today is not None else ""
        limits = ft.Text(
            f"Limits: {money(b.per_payment_limit)} a payment, {money(b.daily_limit)} a day{spent}",
            size=12,
            key="limits",
        )
    balance_card = ft.Card(
        ft.Container(
            ft.Column(
                [
                    ft.Text("Balance", size=14),
                    ft.Text(money(b.available if b else None), size=32, key="balance"),
                    *([limits] if limits else []),
                ],
                spacing=4,
            ),
            padding=16,
        )
    )
    recent = state.transactions[:5]
    return screen(
        f"Hello {who}".strip(),
        Banner(state),
        balance_card,
        ft.FilledButton(
            "Scan to pay",
            icon=ft.Icons.QR_CODE_SCANNER,
            on_click=lambda _: state.open_scanner(),
            key="scan",
        ),
        ft.Row(
            [
                ft.TextField(
                    label="Top-up amount",
                    value=topup,
                    width=180,
                    keyboard_type=ft.KeyboardType.NUMBER,
                    error=state.topup_error or None,
                    on_change=lambda e: set_topup(e.control.value),
                    on_submit=do_topup,
                    key="topup-amount",
                ),
                ft.OutlinedButton("Top up", on_click=do_topup, disabled=state.busy, key="topup"),
            ]
        ),
        busy_ring(state),
        ft.Row(
            [
                ft.Text("Recent", size=16, weight=ft.FontWeight.BOLD, expand=True),
                ft.TextButton("History", on_click=lambda _: state.go(HISTORY), key="history"),
                ft.IconButton(ft.Icons.REFRESH, tooltip="Refresh", on_click=state.refresh),
                ft.IconButton(ft.Icons.LOGOUT, tooltip="Sign out", on_click=state.sign_out),
            ]
        ),
        ft.Column([TransactionRow(t) for t in recent], spacing=0, key="recent")
        if recent
        else ft.Text("No transactions yet.", key="recent-empty"),
    )
