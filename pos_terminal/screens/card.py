"""Card checkout: take the reader's swipe (never shown), show the masked card, send it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Footer, Static

from pos_terminal.client import ClientError, Payment, PaymentStatus
from pos_terminal.journal import Entry, new_key
from pos_terminal.receipt import receipt_lines
from pos_terminal.screens.base import PosScreen
from pos_terminal.swipe import SwipeSummary, summarize
from pos_terminal.widgets.inputs import SwipeCapture, _Secret
from pos_terminal.widgets.status import ConnectionStatus
from psp_server.domain.money import Money

NOT_YET = "Card payments are not available yet."

_DECLINE_REASONS = {
    "CARD_DECLINED": "declined by the bank",
    "INSUFFICIENT_FUNDS": "not enough funds",
    "CARD_EXPIRED": "the card has expired",
    "CARD_INVALID": "the card number is not valid",
    "CARD_LOST_OR_STOLEN": "the card is reported lost or stolen",
    "ISSUER_UNAVAILABLE": "the bank did not answer",
}


class CardScreen(PosScreen[PaymentStatus | None]):
    BINDINGS = [  # noqa: RUF012
        Binding("escape", "back", "Back"),
    ]

    #: waiting -> sending -> approved | declined | unavailable | failed
    state: reactive[str] = reactive("waiting")

    def __init__(self, amount: Money, description: str = "") -> None:
        super().__init__()
        self.amount = amount
        self.description = description
        self.entry: Entry | None = None
        self.card: SwipeSummary | None = None
        self.payment: Payment | None = None

    def compose(self) -> ComposeResult:
        yield ConnectionStatus()
        with VerticalScroll(id="card"):
            yield Static("CARD PAYMENT", id="headline")
            yield Static(self.amount.format(), id="amount", markup=False)
            yield SwipeCapture(id="swipe")
            yield Static("", id="card-info", markup=False)
            yield Static("Swipe the card through the reader.", id="state", markup=False)
            yield Static("", id="receipt", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(SwipeCapture).focus()

    @property
    def status_text(self) -> str:
        return str(self.query_one("#state", Static).content)

    @property
    def card_text(self) -> str:
        return str(self.query_one("#card-info", Static).content)

    def _say(self, text: str, *, kind: str = "") -> None:
        widget = self.query_one("#state", Static)
        for cls in ("-approved", "-declined", "-error"):
            widget.remove_class(cls)
        if kind:
            widget.add_class(f"-{kind}")
        widget.update(text)

    def on_swipe_capture_swiped(self, event: SwipeCapture.Swiped) -> None:
        event.stop()
        if self.state in ("sending", "approved"):
            return
        card = summarize(event.track_data.value)
        if card is None:
            self._say("Could not read the card. Swipe it again.", kind="error")
            return
        if self.card is not None and card.masked != self.card.masked:
            # Another card: a new attempt, with a new key and order number.
            self.entry = None
        self.card = card
        self.query_one("#card-info", Static).update(f"{card.brand}  {card.masked}")
        self.send(event.track_data)

    def _new_entry(self) -> Entry:
        entry = Entry(
            kind="card",
            idempotency_key=new_key(),
            amount_minor=self.amount.amount_minor,
            currency=self.amount.currency,
            description=self.description,
        )
        return self.pos.journal.record_order(entry)

    @work(exclusive=True, group="card", exit_on_error=False, description="card sale")
    async def send(self, track: _Secret) -> None:
        token = self.guard.begin("card")
        self.state = "sending"
        self._say("Authorizing…")
        if self.entry is None:
            self.entry = await asyncio.to_thread(self._new_entry)
        entry = self.entry
        try:
            payment = await self.pos.client.swipe_card(
                track_data=track.value,
                amount=self.amount,
                order_id=entry.order_id,
                idempotency_key=entry.idempotency_key,
            )
        except ClientError as exc:
            track.value = ""
            if self.guard.stale(token, self):
                return
            if exc.unavailable:
                self.state = "unavailable"
                self._say(
                    "Cannot reach the PSP. Swipe again to retry (it cannot be charged twice).",
                    kind="error",
                )
                return
            await asyncio.to_thread(self.pos.journal.finish, entry.idempotency_key)
            if exc.unimplemented:
                self.state = "failed"
                self._say(NOT_YET, kind="error")
            else:
                self.state = "declined"
                why = _DECLINE_REASONS.get(exc.reason, exc.message or exc.reason)
                self._say(f"DECLINED: {why} ({exc.reason})", kind="declined")
            return
        track.value = ""
        await asyncio.to_thread(self.pos.journal.finish, entry.idempotency_key)
        if self.guard.stale(token, self):
            return
        self.entry = replace(entry, payment_id=payment.id)
        self.payment = payment = self.pos.remember(payment)
        if payment.card is not None:
            self.query_one("#card-info", Static).update(
                f"{payment.card.brand}  {payment.card.pan_masked}"
            )
        if payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED):
            self.state = "approved"
            code = payment.card.auth_code if payment.card else ""
            self._say(f"APPROVED  {payment.amount.format()}  auth {code}".rstrip(), kind="approved")
            receipt = "\n".join(receipt_lines(payment, self.pos.merchant, width=44))
            self.query_one("#receipt", Static).update(receipt)
        else:
            self.state = "declined"
            card = payment.card
            why = (card.response_text or card.response_code) if card else payment.status.label
            code = f" ({card.response_code})" if card and card.response_code else ""
            self._say(f"DECLINED: {why}{code}", kind="declined")
            # A declined card starts a fresh attempt.
            self.entry = None

    def watch_state(self, state: str) -> None:
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back" and self.state == "sending":
            return None
        return True

    def action_back(self) -> None:
        self.dismiss(self.payment.status if self.payment is not None else None)
