"""Sign in, or create an account."""

from __future__ import annotations

import flet as ft

from wallet_app.state import WalletState
from wallet_app.views.common import Banner, busy_ring, screen

CURRENCIES = ["EUR", "USD", "GBP", "CHF", "SEK", "PLN", "JPY"]


@ft.component
def SignIn(state: WalletState) -> ft.Control:
    creating, set_creating = ft.use_state(False)
    email, set_email = ft.use_state("")
    password, set_password = ft.use_state("")
    name, set_name = ft.use_state("")
    currency, set_currency = ft.use_state("EUR")

    async def submit(_=None):
        if creating:
            await state.register(email, password, name, currency)
        else:
            await state.sign_in(email, password)

    fields: list[ft.Control] = [
        ft.TextField(
            label="Email",
            value=email,
            keyboard_type=ft.KeyboardType.EMAIL,
            autofocus=True,
            on_change=lambda e: set_email(e.control.value),
            key="email",
        ),
        ft.TextField(
            label="Password",
            value=password,
            password=True,
            can_reveal_password=True,
            on_change=lambda e: set_password(e.control.value),
            on_submit=submit,
            key="password",
        ),
    ]
    if creating:
        fields += [
            ft.TextField(
                label="Your name",
                value=name,
                on_change=lambda e: set_name(e.control.value),
                key="display-name",
            ),
            ft.Dropdown(
                label="Wallet currency",
                value=currency,
                options=[ft.DropdownOption(c) for c in CURRENCIES],
                on_select=lambda e: set_currency(e.control.value or "EUR"),
                key="currency",
            ),
        ]
    action = "Create account" if creating else "Sign in"
    return screen(
        "ScanPay wallet",
        ft.Text("Create your wallet" if creating else "Sign in to pay with a scan"),
        Banner(state),
        *fields,
        ft.FilledButton(action, on_click=submit, disabled=state.busy, key="submit"),
        ft.TextButton(
            "I have an account" if creating else "Create an account",
            on_click=lambda _: set_creating(not creating),
            key="toggle",
        ),
        busy_ring(state),
    )
