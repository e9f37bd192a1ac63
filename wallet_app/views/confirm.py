"""Confirm: who is paid (as the PSP verified it), how much, the FX rate and its countdown,
warnings, and the Pay button."""

from __future__ import annotations

import flet as ft

from wallet_app.state import BLOCKING_WARNINGS, Notice, WalletState, sentence
from wallet_app.views.common import Banner, NoticeCard, busy_ring, countdown, money, screen

_WARNING_TITLES = {
    "QR_NAME_MISMATCH": "The name in the code is not the shop's registered name",
    "QR_AMOUNT_MISMATCH": "The amount in the code differs from the shop's",
}


@ft.component
def MerchantCard(state: WalletState) -> ft.Control:
    q = state.quote
    m = q.merchant if q else None
    if m is None:
        name = q.qr_merchant_name if q else ""
        return ft.Text(f"Code from: {name}" if name else "Unknown payee", key="merchant")
    place = ", ".join(p for p in (m.city, m.country) if p)
    return ft.Card(
        ft.Container(
            ft.Column(
                [
                    ft.Text("Pay to", size=12),
                    ft.Text(m.name, size=22, weight=ft.FontWeight.BOLD, key="merchant"),
                    *([ft.Text(place, size=12)] if place else []),
                    ft.Row(
                        [
                            ft.Icon(ft.Icons.VERIFIED, color=ft.Colors.BLUE_700, size=16),
                            ft.Text("Verified by ScanPay", size=12),
                        ],
                        spacing=4,
                    ),
                ],
                spacing=2,
            ),
            padding=14,
        )
    )


@ft.component
def AmountEntry(state: WalletState) -> ft.Control:
    """A static QR carries no amount: the consumer types it (and an optional reference)."""
    text, set_text = ft.use_state("")

    async def review(_=None):
        await state.enter_amount(text)

    return ft.Column(
        [
            ft.TextField(
                label=f"Amount ({state.quote_currency})",
                value=text,
                keyboard_type=ft.KeyboardType.NUMBER,
                suffix=ft.Text(state.quote_currency),
                error=state.amount_error or None,
                autofocus=True,
                on_change=lambda e: set_text(e.control.value),
                on_submit=review,
                key="amount",
            ),
            ft.TextField(
                label="Reference (optional)",
                value=state.reference,
                on_change=lambda e: state.set_reference(e.control.value),
                key="reference",
            ),
            ft.FilledButton("Review", on_click=review, disabled=state.busy, key="review"),
        ],
        spacing=12,
    )


@ft.component
def PriceBlock(state: WalletState) -> ft.Control:
    q = state.quote
    assert q is not None
    parts: list[ft.Control] = [ft.Text(money(q.amount), size=34, key="amount-due")]
    if q.description or q.order_id:
        parts.append(ft.Text(" · ".join(p for p in (q.description, q.order_id) if p), size=12))
    if q.fx_rate and q.payer_amount is not None and q.amount is not None:
        parts += [
            ft.Text(f"You pay {money(q.payer_amount)}", size=18, key="payer-amount"),
            ft.Text(
                f"Rate {q.fx_rate} {q.payer_amount.currency} per {q.amount.currency}",
                key="fx-rate",
            ),
        ]
        if state.quote_expired:
            parts.append(ft.Text("Rate expired", color=ft.Colors.RED_800, key="countdown"))
        elif state.seconds_left is not None:
            parts.append(ft.Text(f"Rate held for {countdown(state.seconds_left)}", key="countdown"))
    elif state.seconds_left is not None and not state.quote_expired:
        parts.append(ft.Text(f"Valid for {countdown(state.seconds_left)}", key="countdown"))
    return ft.Column(parts, spacing=4)


@ft.component
def Confirm(state: WalletState) -> ft.Control:
    q = state.quote
    if q is None:
        return screen("Confirm", ft.Text("Nothing to pay."), back=lambda _: state.done())
    blocking = state.blocking
    warnings = [
        NoticeCard(
            Notice(
                _WARNING_TITLES.get(w.code, "Check before paying"),
                sentence(w.message),
                w.code,
                "warning",
            ),
            key_name=f"warning-{w.code}",
        )
        for w in q.warnings
        if w.code not in BLOCKING_WARNINGS
    ]
    body: list[ft.Control | None] = [MerchantCard(state), *warnings, Banner(state)]
    if blocking is not None:
        body += [
            NoticeCard(blocking, key_name="blocking"),
            ft.FilledButton(
                "Scan another code", on_click=lambda _: state.open_scanner(), key="rescan"
            ),
            ft.TextButton("Back to wallet", on_click=lambda _: state.done(), key="home"),
        ]
    elif q.amount_required:
        body += [AmountEntry(state), busy_ring(state)]
    else:
        pay_amount = q.payer_amount or q.amount
        body += [
            PriceBlock(state),
            ft.FilledButton(
                f"Pay {money(pay_amount)}",
                icon=ft.Icons.LOCK,
                on_click=state.pay,
                disabled=not state.can_pay,
                key="pay",
            ),
            ft.OutlinedButton("Get a new rate", on_click=state.requote, key="requote")
            if state.quote_expired
            else None,
            ft.TextButton("Change amount", on_click=lambda _: state.edit_amount(), key="edit")
            if q.initiation == "static"
            else None,
            ft.TextButton("Cancel", on_click=lambda _: state.cancel_payment(), key="cancel"),
            busy_ring(state),
        ]
    return screen("Confirm payment", *body, back=lambda _: state.cancel_payment())
