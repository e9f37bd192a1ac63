"""QR checkout: create the payment (journaled first), show its code, watch it turn PAID."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Footer, Static

from pos_terminal.client import ClientError, Payment, PaymentStatus
from pos_terminal.journal import Entry, new_key
from pos_terminal.receipt import receipt_lines
from pos_terminal.screens.base import PosScreen
from pos_terminal.screens.dialogs import ConfirmScreen
from pos_terminal.widgets.qr_code import QrCode
from pos_terminal.widgets.status import ConnectionStatus
from psp_server.domain.money import Money

_STATE_CHANGES = ("PAYMENT_ALREADY_PAID", "PAYMENT_EXPIRED", "PAYMENT_CANCELED")


def describe_error(exc: ClientError) -> str:
    return {
        "INVALID_AMOUNT": "The PSP does not accept this amount.",
        "IDEMPOTENCY_KEY_REUSED": "This order was already sent with different details.",
        "INVALID_API_KEY": "The PSP no longer accepts this till's API key.",
    }.get(exc.reason, f"The PSP refused: {exc.reason} {exc.message}".strip())


class CheckoutScreen(PosScreen[PaymentStatus | None]):
    """Dismissed with the payment's final status, or ``None`` when abandoned."""

    BINDINGS = [  # noqa: RUF012
        Binding("escape", "cancel_payment", "Cancel payment"),
        Binding("escape", "abandon", "Abandon order"),
        Binding("escape", "done", "Back"),
        Binding("enter", "retry", "Try again"),
        Binding("enter", "new_sale", "New sale"),
    ]

    #: creating -> pending -> final, or creating -> failed (retry) / error (give up);
    #: pending -> canceling -> final.
    state: reactive[str] = reactive("creating")

    def __init__(self, amount: Money, description: str = "", *, entry: Entry | None = None):
        super().__init__()
        self.amount = amount
        self.description = description
        self.entry = entry
        self.resumed = entry is not None
        self.payment: Payment | None = None
        self._expiry_checked_at: datetime | None = None

    @classmethod
    def resume(cls, entry: Entry) -> CheckoutScreen:
        return cls(Money(entry.amount_minor, entry.currency), entry.description, entry=entry)

    def compose(self) -> ComposeResult:
        merchant = self.pos.merchant
        with Horizontal(id="checkout"):
            yield QrCode(id="qr")
            with Vertical(id="side"):
                yield Static("SCAN TO PAY", id="headline")
                yield Static(self.amount.format(), id="amount", markup=False)
                yield Static(
                    f"{merchant.name}\n{merchant.city}" if merchant else "",
                    id="merchant",
                    markup=False,
                )
                yield Static("", id="order", markup=False)
                yield Static("", id="countdown", markup=False)
                yield Static("Creating the payment…", id="state", markup=False)
                yield ConnectionStatus(classes="-compact")
        with Vertical(id="result"):
            yield Static("", id="banner", markup=False)
            yield Static("", id="receipt", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#result").display = False
        self.pos.payment_signal.subscribe(self, self._on_payment)
        self._ticker = self.set_interval(1.0, self._tick, pause=True)
        if self.entry is not None:
            self._set("#order", f"Order {self.entry.order_id}")
        self.create()

    # -- display ------------------------------------------------------------------------

    def _set(self, selector: str, text: str) -> None:
        self.query_one(selector, Static).update(text)

    @property
    def status_text(self) -> str:
        return str(self.query_one("#state", Static).content)

    @property
    def banner_text(self) -> str:
        return str(self.query_one("#banner", Static).content)

    @property
    def qr_payload(self) -> str:
        return self.query_one(QrCode).payload

    def watch_state(self, state: str) -> None:
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = {
            "cancel_payment": self.state == "pending",
            "abandon": self.state in ("creating", "failed"),
            "retry": self.state == "failed",
            "done": self.state in ("final", "error"),
            "new_sale": self.state == "final",
        }
        return allowed.get(action, True)

    def _show(self, payment: Payment) -> None:
        self.payment = payment
        self.query_one(QrCode).payload = payment.qr_payload
        self._set("#amount", payment.amount.format())
        self._set("#order", f"Order {payment.order_id}")
        if payment.status.is_final:
            self._final(payment)
            return
        self.state = "pending"
        self._set("#state", "Waiting for the customer to pay…")
        self._tick()
        self._ticker.resume()

    def _final(self, payment: Payment) -> None:
        self._ticker.pause()
        self.state = "final"
        self.query_one("#checkout").display = False
        self.query_one("#result").display = True
        banner = self.query_one("#banner", Static)
        for cls in ("-paid", "-expired", "-canceled"):
            banner.remove_class(cls)
        if payment.status.is_paid:
            banner.add_class("-paid")
            banner.update(f"✔ PAID  {payment.amount.format()}")
        elif payment.status == PaymentStatus.EXPIRED:
            banner.add_class("-expired")
            banner.update("EXPIRED: the QR code timed out, nothing was paid")
        elif payment.status == PaymentStatus.CANCELED:
            banner.add_class("-canceled")
            banner.update("CANCELED: nothing was paid")
        else:
            banner.add_class("-canceled")
            banner.update(payment.status.label)
        self._set("#receipt", "\n".join(receipt_lines(payment, self.pos.merchant, width=44)))
        self._set("#state", payment.status.label)
        if self.entry is not None:
            self._close_entry(self.entry.idempotency_key)

    def _on_payment(self, update: object) -> None:
        payment = update.payment  # type: ignore[attr-defined]
        if self.payment is not None and payment.id == self.payment.id and self.state != "final":
            self._show(payment)

    def _tick(self) -> None:
        payment = self.payment
        if payment is None or payment.expires_at is None:
            self._set("#countdown", "")
            return
        left = int((payment.expires_at - datetime.now(UTC)).total_seconds())
        if left > 0:
            minutes, seconds = divmod(left, 60)
            self._set("#countdown", f"Expires in {minutes:02d}:{seconds:02d}")
            return
        self._set("#countdown", "Expiring…")
        now = datetime.now(UTC)
        if self._expiry_checked_at is None or (now - self._expiry_checked_at).total_seconds() > 5:
            self._expiry_checked_at = now
            self.refresh_status()

    # -- requests ----------------------------------------------------------------------------

    def _new_entry(self) -> Entry:
        entry = Entry(
            kind="checkout",
            idempotency_key=new_key(),
            amount_minor=self.amount.amount_minor,
            currency=self.amount.currency,
            description=self.description,
        )
        return self.pos.journal.record_order(entry)

    @work(exclusive=True, group="create", exit_on_error=False, description="create payment")
    async def create(self) -> None:
        token = self.guard.begin("create")
        self.state = "creating"
        self._set("#state", "Creating the payment…")
        if self.entry is None:
            # On disk (fsync) before the request leaves: a retry reuses this key.
            self.entry = await asyncio.to_thread(self._new_entry)
        entry = self.entry
        self._set("#order", f"Order {entry.order_id}")
        try:
            payment = await self.pos.client.create_payment(
                order_id=entry.order_id,
                amount=self.amount,
                description=entry.description,
                idempotency_key=entry.idempotency_key,
            )
        except ClientError as exc:
            if self.guard.stale(token, self):
                return
            if exc.unavailable:
                self.state = "failed"
                self._set(
                    "#state",
                    "Cannot reach the PSP. The order is kept: Enter tries again "
                    "(it cannot be charged twice), Esc abandons it.",
                )
            else:
                self.state = "error"
                self._set("#state", describe_error(exc))
                self._close_entry(entry.idempotency_key)
            return
        if self.guard.stale(token, self):
            return
        self._show(self.pos.remember(payment))
        if entry.payment_id != payment.id:
            # After the QR is up: the key alone already makes a retry safe.
            self.entry = replace(entry, payment_id=payment.id)
            await asyncio.to_thread(
                self.pos.journal.update, entry.idempotency_key, payment_id=payment.id
            )
        if self.resumed and not payment.status.is_final:
            # A replay returns the payment as it was created; ask for how it is now.
            self.refresh_status()

    @work(exclusive=True, group="refresh", exit_on_error=False, description="payment status")
    async def refresh_status(self) -> None:
        if self.payment is None:
            return
        token = self.guard.begin("refresh")
        try:
            payment = await self.pos.client.get_payment(self.payment.id)
        except ClientError:
            return
        if self.guard.stale(token, self) or self.state == "final":
            return
        self._show(self.pos.remember(payment))

    @work(exclusive=True, group="cancel", exit_on_error=False, description="cancel payment")
    async def cancel(self) -> None:
        payment, entry = self.payment, self.entry
        if payment is None or entry is None:
            return
        token = self.guard.begin("cancel")
        self.state = "canceling"
        self._set("#state", "Canceling the payment…")
        cancel_key = entry.extra.get("cancel_key")
        if not cancel_key:
            cancel_key = new_key()
            self.entry = entry = replace(entry, extra={**entry.extra, "cancel_key": cancel_key})
            await asyncio.to_thread(
                self.pos.journal.update, entry.idempotency_key, extra=entry.extra
            )
        try:
            result = await self.pos.client.cancel_payment(payment.id, idempotency_key=cancel_key)
        except ClientError as exc:
            if self.guard.stale(token, self):
                return
            if exc.reason in _STATE_CHANGES:
                # The wallet (or the clock) got there first: show what really happened.
                try:
                    result = await self.pos.client.get_payment(payment.id)
                except ClientError:
                    self.state = "pending"
                    self._set("#state", f"Could not cancel: {exc.reason}.")
                    return
            else:
                self.state = "pending"
                what = "the PSP is unreachable" if exc.unavailable else exc.reason
                self._set("#state", f"Could not cancel: {what}. Esc tries again.")
                return
        if self.guard.stale(token, self) or self.state == "final":
            return
        self._show(self.pos.remember(result))

    @work(group="journal", exit_on_error=False, description="close journal entry")
    async def _close_entry(self, key: str) -> None:
        await asyncio.to_thread(self.pos.journal.finish, key)

    # -- actions -------------------------------------------------------------------------------

    def action_retry(self) -> None:
        self.create()

    def action_new_sale(self) -> None:
        self.action_done()

    def action_done(self) -> None:
        self.dismiss(self.payment.status if self.payment is not None else None)

    def action_cancel_payment(self) -> None:
        amount = self.payment.amount.format() if self.payment else self.amount.format()

        def answered(yes: bool | None) -> None:
            if yes and self.state == "pending":
                self.cancel()

        self.app.push_screen(
            ConfirmScreen(
                f"Cancel this payment of {amount}?\n\nThe QR code stops working.",
                title="Cancel payment",
            ),
            answered,
        )

    def action_abandon(self) -> None:
        def answered(yes: bool | None) -> None:
            if not yes or self.state not in ("creating", "failed"):
                return
            self.guard.invalidate("create")
            self.workers.cancel_group(self, "create")
            if self.entry is not None:
                self.pos.abandon_checkout(self.entry)
            self.dismiss(None)

        self.app.push_screen(
            ConfirmScreen(
                "Abandon this order?\n\nIf the PSP already made the payment, it is canceled.",
                title="Abandon order",
            ),
            answered,
        )
