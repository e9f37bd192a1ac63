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

from pos_terminal.client import CardInfo, ClientError, Payment, PaymentStatus
from pos_terminal.journal import Entry, new_key
from pos_terminal.receipt import receipt_lines
from pos_terminal.screens.base import PosScreen
from pos_terminal.swipe import SwipeSummary, summarize
from pos_terminal.widgets.inputs import SwipeCapture, _Secret
from pos_terminal.widgets.status import ConnectionStatus
from psp_server.domain.money import Money

NOT_YET = "Card payments are not available yet."

#: The card network's answer (ISO 8583 field 39, as the PSP returns it in
#: ``card.response_code``; see ``psp_server.domain.cards.response_code``) in the cashier's
#: words. A code not listed falls back to the PSP's ``response_text``.
DECLINE_REASONS = {
    "05": "Do not honor",
    "12": "Invalid transaction",
    "13": "Invalid amount",
    "14": "Invalid card number",
    "15": "Unknown card issuer",
    "41": "Card reported lost",
    "43": "Card reported stolen",
    "51": "Insufficient funds",
    "54": "Card expired",
    "91": "The card's bank is not answering",
    "96": "Card network malfunction",
}

#: What the cashier should do next, by response code.
DECLINE_ADVICE = {
    "05": "The bank gives no reason. Ask for another card or another way to pay.",
    "51": "Ask for another card or another way to pay.",
    "54": "Ask for another card.",
    "41": "Do not accept this card. Ask for another way to pay.",
    "43": "Do not accept this card. Ask for another way to pay.",
    "91": "Try again in a moment, or ask for another way to pay.",
    "96": "Try again in a moment, or ask for another way to pay.",
}

#: The PSP refused the swipe itself (``INVALID_ARGUMENT``): nothing was sent or recorded.
SWIPE_ERRORS = {
    "CARD_READ_ERROR": "The card could not be read. Swipe it again.",
    "CARD_TRACK_MISMATCH": "The card was misread. Swipe it again.",
    "CARD_LUHN_FAILED": "The card number is not valid. Ask for another card.",
    "CARD_EXPIRED": "The card has expired. Ask for another card.",
    "CARD_UNSUPPORTED": "This card cannot be used here. Ask for another card.",
}

NOT_CHARGED = (
    "NOT CHARGED: the card network did not answer, so the payment did not go through. "
    "Nothing was charged. Swipe again to retry."
)
NETWORK_DOWN = (
    "NOT CHARGED: the card network cannot be reached right now; nothing was sent. "
    "Swipe again in a moment, or take another way to pay."
)

_BRANDS = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "Amex",
    "discover": "Discover",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "maestro": "Maestro",
    "diners": "Diners",
    "mir": "Mir",
}


def brand_label(brand: str) -> str:
    """The PSP's brand (``visa``) as the cashier reads it (``Visa``)."""
    return _BRANDS.get(brand.lower(), brand or "Card")


def decline_reason(card: CardInfo | None) -> str:
    """``Insufficient funds (51)`` for a declined card payment."""
    if card is None:
        return "declined"
    code = card.response_code
    why = DECLINE_REASONS.get(code) or card.response_text or "declined"
    return f"{why} ({code})" if code else why


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
        #: Every status line shown, in order (what the cashier saw; never card data).
        self.shown: list[str] = []

    def compose(self) -> ComposeResult:
        yield ConnectionStatus()
        with VerticalScroll(id="card"):
            yield Static("CARD PAYMENT", id="headline")
            yield Static(self.amount.format(), id="amount", markup=False)
            yield SwipeCapture(id="swipe")
            yield Static("", id="card-info", markup=False)
            yield Static("Swipe the card through the reader.", id="state", markup=False)
            yield Static("", id="advice", markup=False)
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

    @property
    def advice_text(self) -> str:
        return str(self.query_one("#advice", Static).content)

    def _say(self, text: str, *, kind: str = "", advice: str = "") -> None:
        widget = self.query_one("#state", Static)
        for cls in ("-approved", "-declined", "-error"):
            widget.remove_class(cls)
        if kind:
            widget.add_class(f"-{kind}")
        widget.update(text)
        self.query_one("#advice", Static).update(advice)
        self.shown.append(text)

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

    async def _forget_attempt(self, entry: Entry) -> None:
        """The PSP recorded nothing for this attempt: the next swipe is a new one."""
        await asyncio.to_thread(self.pos.journal.finish, entry.idempotency_key)
        self.entry = None

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
            await self._failed(exc, entry)
            return
        track.value = ""
        await asyncio.to_thread(self.pos.journal.finish, entry.idempotency_key)
        if self.guard.stale(token, self):
            return
        self.entry = replace(entry, payment_id=payment.id)
        self.payment = payment = self.pos.remember(payment)
        if payment.card is not None:
            self.query_one("#card-info", Static).update(
                f"{brand_label(payment.card.brand)}  {payment.card.pan_masked}"
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
            code = card.response_code if card else ""
            self._say(
                f"DECLINED: {decline_reason(card)}",
                kind="declined",
                advice=DECLINE_ADVICE.get(code, "Ask for another card or another way to pay."),
            )
            # A declined card starts a fresh attempt.
            self.entry = None

    async def _failed(self, exc: ClientError, entry: Entry) -> None:
        """Show why the swipe did not become a payment; keep the key only where a repeat
        must be recognised by the PSP as the same request."""
        if exc.unreachable or exc.reason == "REQUEST_IN_PROGRESS":
            # The PSP may have the payment: the next swipe repeats this request, same key.
            self.state = "unavailable"
            what = (
                "The PSP is still working on this card payment."
                if exc.reason == "REQUEST_IN_PROGRESS"
                else "Cannot reach the PSP."
            )
            self._say(f"{what} Swipe again to retry (it cannot be charged twice).", kind="error")
            return
        if exc.code in ("INTERNAL", "UNKNOWN", "DATA_LOSS"):
            # Not known whether the PSP made the payment: the next swipe repeats the request
            # with the same key, which returns the payment if there is one.
            self.state = "unavailable"
            self._say(
                f"The PSP failed ({exc.reason}). Check History, or swipe again to retry "
                "(it cannot be charged twice).",
                kind="error",
            )
            return
        await self._forget_attempt(entry)
        if exc.unimplemented:
            self.state = "failed"
            self._say(NOT_YET, kind="error")
        elif exc.reason == "CARD_NETWORK_TIMEOUT":
            # The PSP reversed what it sent (or queued the reversal): nothing is held.
            self.state = "not_charged"
            self._say(NOT_CHARGED, kind="error")
        elif exc.card_network:
            self.state = "not_charged"
            self._say(NETWORK_DOWN, kind="error")
        elif exc.reason in SWIPE_ERRORS:
            self.state = "failed"
            self._say(SWIPE_ERRORS[exc.reason], kind="error")
        else:
            self.state = "failed"
            self._say(f"Card payment refused: {exc.reason}. Nothing was charged.", kind="error")

    def watch_state(self, state: str) -> None:
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back" and self.state == "sending":
            return None
        return True

    def action_back(self) -> None:
        self.dismiss(self.payment.status if self.payment is not None else None)
