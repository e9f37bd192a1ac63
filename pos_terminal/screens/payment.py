"""One payment's receipt, with refund (full or partial) and, for a card payment, void."""

from __future__ import annotations

import asyncio

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from pos_terminal.client import ClientError, Payment, PaymentMethod, PaymentStatus
from pos_terminal.journal import Entry, new_key
from pos_terminal.receipt import receipt_lines
from pos_terminal.screens.base import PosScreen
from pos_terminal.screens.card import NOT_YET
from pos_terminal.screens.dialogs import AmountScreen, ConfirmScreen
from pos_terminal.state import PaymentUpdate
from pos_terminal.widgets.status import ConnectionStatus
from psp_server.domain.money import Money

_REFUND_ERRORS = {
    "REFUND_EXCEEDS_CAPTURED": "That is more than is left to refund on this payment.",
    "INVALID_AMOUNT": "The PSP does not accept this amount.",
    "PAYMENT_NOT_FOUND": "The PSP does not know this payment.",
    "PAYMENT_NOT_REFUNDABLE": "This payment cannot be refunded (nothing is left to refund).",
    "IDEMPOTENCY_KEY_REUSED": "This refund was already sent with other details.",
    "CARD_NETWORK_TIMEOUT": "The card network did not answer; the refund was reversed and "
    "nothing was refunded. Press r to try again.",
    "CARD_NETWORK_UNAVAILABLE": "The card network cannot be reached; nothing was refunded. "
    "Press r to try again in a moment.",
    "REQUEST_IN_PROGRESS": "The PSP is still working on this refund. Press r again in a "
    "moment: it cannot happen twice.",
}

_VOID_ERRORS = {
    "PAYMENT_NOT_VOIDABLE": "This payment can no longer be voided (its card batch is closed, "
    "or it was refunded). Refund it instead.",
    "CARD_REVERSAL_REFUSED": "The card network refused the void. Refund it instead.",
    "NOT_A_CARD_PAYMENT": "Only card payments can be voided.",
    "CARD_NETWORK_TIMEOUT": "The card network did not answer; nothing was voided. "
    "Press v to try again.",
    "CARD_NETWORK_UNAVAILABLE": "The card network cannot be reached; nothing was voided. "
    "Press v to try again in a moment.",
    "REQUEST_IN_PROGRESS": "The PSP is still working on this void. Press v again in a moment.",
}


class PaymentScreen(PosScreen[None]):
    BINDINGS = [  # noqa: RUF012
        Binding("r", "refund", "Refund"),
        Binding("v", "void", "Void"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, payment_id: str) -> None:
        super().__init__()
        self.payment_id = payment_id
        self.busy = False

    @property
    def payment(self) -> Payment:
        return self.pos.payments[self.payment_id]

    def compose(self) -> ComposeResult:
        yield ConnectionStatus()
        with VerticalScroll(id="detail"):
            yield Static("", id="receipt", markup=False)
        yield Static("", id="message", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.pos.payment_signal.subscribe(self, self._on_payment)
        self._show_receipt()

    @property
    def message(self) -> str:
        return str(self.query_one("#message", Static).content)

    def _say(self, text: str, *, error: bool = False) -> None:
        widget = self.query_one("#message", Static)
        widget.set_class(error, "error")
        widget.update(text)

    def _show_receipt(self) -> None:
        lines = receipt_lines(self.payment, self.pos.merchant, width=50)
        self.query_one("#receipt", Static).update("\n".join(lines))
        self.refresh_bindings()

    def _on_payment(self, update: PaymentUpdate) -> None:
        if update.payment.id == self.payment_id:
            self._show_receipt()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        payment = self.payment
        if action == "refund":
            return None if self.busy or not payment.refundable.is_positive else True
        if action == "void":
            if payment.method != PaymentMethod.CARD:
                return False
            voidable = payment.status in (PaymentStatus.AUTHORIZED, PaymentStatus.SUCCEEDED)
            return None if self.busy or not voidable else True
        return True

    def _busy(self, busy: bool) -> None:
        self.busy = busy
        self.refresh_bindings()

    # -- refund ------------------------------------------------------------------------------

    def action_refund(self) -> None:
        payment = self.payment
        left = payment.refundable

        def confirmed(amount: Money, yes: bool | None) -> None:
            if yes:
                self.refund(amount)

        def chosen(amount: Money | None) -> None:
            if amount is None:
                return
            kind = "the full amount" if amount == left else "a partial refund"
            self.app.push_screen(
                ConfirmScreen(
                    f"Refund {amount.format()} ({kind}) of order {payment.order_id} "
                    "to the customer?",
                    title="Confirm refund",
                ),
                lambda yes: confirmed(amount, yes),
            )

        self.app.push_screen(
            AmountScreen(
                f"Order {payment.order_id}: {payment.amount.format()} paid, "
                f"{left.format()} can still be refunded.\nHow much to refund?",
                default=left,
                maximum=left,
                title="Refund",
            ),
            chosen,
        )

    def _refund_entry(self, amount: Money) -> Entry:
        journal = self.pos.journal
        pending = journal.find("refund", self.payment_id)
        if pending is not None and pending.amount_minor == amount.amount_minor:
            return pending  # the same refund, interrupted earlier: same key
        if pending is not None:
            journal.finish(pending.idempotency_key)
        return journal.record(
            Entry(
                kind="refund",
                idempotency_key=new_key(),
                order_id=self.payment.order_id,
                amount_minor=amount.amount_minor,
                currency=amount.currency,
                description="refund at the till",
                payment_id=self.payment_id,
            )
        )

    @work(exclusive=True, group="refund", exit_on_error=False, description="refund")
    async def refund(self, amount: Money) -> None:
        token = self.guard.begin("refund")
        self._busy(True)
        self._say(f"Refunding {amount.format()}…")
        entry = await asyncio.to_thread(self._refund_entry, amount)
        try:
            payment = await self.pos.client.refund_payment(
                self.payment_id,
                amount,
                reason=entry.description,
                idempotency_key=entry.idempotency_key,
            )
        except ClientError as exc:
            if not exc.unavailable:
                await asyncio.to_thread(self.pos.journal.finish, entry.idempotency_key)
            if self.guard.stale(token, self):
                return
            self._busy(False)
            if exc.unreachable:
                self._say(
                    "Cannot reach the PSP. Press r to try again: the refund is kept and "
                    "cannot happen twice.",
                    error=True,
                )
            else:
                self._say(
                    _REFUND_ERRORS.get(exc.reason, f"Refund refused: {exc.reason}"), error=True
                )
            return
        await asyncio.to_thread(self.pos.journal.finish, entry.idempotency_key)
        self.pos.remember(payment)
        if self.guard.stale(token, self):
            return
        self._busy(False)
        self._show_receipt()
        self._say(f"Refunded {amount.format()}. Status: {payment.status.label}.")

    # -- void --------------------------------------------------------------------------------

    def action_void(self) -> None:
        payment = self.payment

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.void()

        self.app.push_screen(
            ConfirmScreen(
                f"Void the card payment of {payment.amount.format()} (order "
                f"{payment.order_id})? The hold on the card is released.",
                title="Void",
            ),
            confirmed,
        )

    @work(exclusive=True, group="void", exit_on_error=False, description="void")
    async def void(self) -> None:
        token = self.guard.begin("void")
        self._busy(True)
        self._say("Voiding…")
        entry = self.pos.journal.find("void", self.payment_id)
        if entry is None:
            entry = await asyncio.to_thread(
                self.pos.journal.record,
                Entry(
                    kind="void",
                    idempotency_key=new_key(),
                    order_id=self.payment.order_id,
                    payment_id=self.payment_id,
                ),
            )
        try:
            payment = await self.pos.client.void_payment(
                self.payment_id, idempotency_key=entry.idempotency_key
            )
        except ClientError as exc:
            if not exc.unavailable:
                await asyncio.to_thread(self.pos.journal.finish, entry.idempotency_key)
            if self.guard.stale(token, self):
                return
            self._busy(False)
            if exc.unimplemented:
                self._say(f"{NOT_YET} Nothing was voided.", error=True)
            elif exc.unreachable:
                self._say("Cannot reach the PSP. Press v to try again.", error=True)
            elif exc.reason in _VOID_ERRORS:
                self._say(_VOID_ERRORS[exc.reason], error=True)
            else:
                self._say(f"Void refused: {exc.reason}.", error=True)
            return
        await asyncio.to_thread(self.pos.journal.finish, entry.idempotency_key)
        self.pos.remember(payment)
        if self.guard.stale(token, self):
            return
        self._busy(False)
        self._show_receipt()
        self._say(
            f"Voided {payment.amount.format()}: nothing is charged to the card. "
            f"Status: {payment.status.label}."
        )

    def action_back(self) -> None:
        self.dismiss(None)
