"""Every transaction: payments, refunds (as they come) and top-ups."""

from __future__ import annotations

import flet as ft

from wallet_app.state import HOME, WalletState
from wallet_app.views.common import Banner, screen
from wallet_app.views.home import TransactionRow


@ft.component
def History(state: WalletState) -> ft.Control:
    rows = [TransactionRow(t) for t in state.transactions]
    return screen(
        "History",
        Banner(state),
        ft.Column(rows, spacing=0, key="history-list")
        if rows
        else ft.Text("No transactions yet.", key="history-empty"),
        ft.OutlinedButton("Load more", on_click=state.load_more, key="more")
        if state.history_next
        else None,
        back=lambda _: state.go(HOME),
    )
