"""The cashier terminal: a Textual app over a :class:`~pos_terminal.client.PspClient`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.signal import Signal
from textual.worker import Worker

from pos_terminal.client import (
    ClientError,
    EventType,
    Merchant,
    Payment,
    PaymentStatus,
    PspClient,
)
from pos_terminal.journal import Entry, Journal, new_key
from pos_terminal.screens.connect import ConnectScreen
from pos_terminal.screens.end_of_day import EndOfDayScreen
from pos_terminal.screens.history import HistoryScreen
from pos_terminal.screens.sale import SaleScreen
from pos_terminal.screens.static_qr import StaticQrScreen
from pos_terminal.state import Backoff, PaymentUpdate, Pulse
from psp_server.domain.money import Money


class QuietCollector:
    """Keeps Python's cycle collector from pausing the till at the wrong moment.

    Measured with benchmarks/till_latency.py: left alone, a full collection walks every object
    Textual and gRPC ever made and stops the till for 100-200 ms every few sales, right when
    a QR or a PAID should appear. So: once connected, everything alive is frozen out of the
    collector's sight (``gc.freeze``), automatic collection is off, and the till collects
    itself when nobody waits: after each sale and on an idle timer. Reference counting still
    frees almost everything at once; the collections only catch cycles.
    """

    def __init__(self) -> None:
        self.active = False
        self._was_enabled = True

    def start(self) -> None:
        if self.active:
            return
        self.active = True
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()

    def collect(self) -> None:
        if self.active:
            gc.collect()

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()


_RANK = {
    PaymentStatus.UNSPECIFIED: 0,
    PaymentStatus.PENDING: 1,
    PaymentStatus.AUTHORIZED: 2,
}


def _newer(new: Payment, old: Payment) -> bool:
    """Whether ``new`` is at least as recent as ``old`` (replies can race stream events)."""
    if new.updated_at and old.updated_at:
        return new.updated_at >= old.updated_at
    return _RANK.get(new.status, 9) >= _RANK.get(old.status, 9)


class PosApp(App[int]):
    """``PosApp(client=..., data_dir=...)``: one mode per module, the stream at app level."""

    CSS_PATH = Path(__file__).with_name("pos.tcss")  # absolute: subclasses live elsewhere
    TITLE = "scanpay till"
    ENABLE_COMMAND_PALETTE = False
    MODES = {  # noqa: RUF012 - Textual's class-level mode table
        "sale": SaleScreen,
        "history": HistoryScreen,
        "static": StaticQrScreen,
        "day": EndOfDayScreen,
    }
    DEFAULT_MODE = "sale"
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    #: "connecting" until the payment stream first opens, then "online" or "offline".
    link: reactive[str] = reactive("connecting")

    def __init__(
        self,
        client: PspClient,
        data_dir: Path,
        *,
        psp_address: str = "",
        on_connected: Callable[[Merchant], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.data_dir = Path(data_dir)
        self.journal = Journal(self.data_dir)
        self.psp_address = psp_address
        self.backoff = backoff or Backoff()
        self._on_connected = on_connected
        self.merchant: Merchant | None = None
        self.payments: dict[str, Payment] = {}
        self.payment_signal: Signal[PaymentUpdate] = Signal(self, "payment")
        self.status_signal: Signal[str] = Signal(self, "status")
        self.pulse = Pulse()
        self.collector = QuietCollector()
        self.stream_error: ClientError | None = None
        self.events_seen = 0

    # -- start-up ------------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(ConnectScreen())

    def connected(self, merchant: Merchant) -> None:
        """Called by the connect screen once the PSP accepted our key."""
        self.merchant = merchant
        self.sub_title = f"{merchant.name} · {merchant.terminal_label}"
        if self._on_connected is not None:
            self._on_connected(merchant)
        self.watch_stream()
        self.status_signal.publish(self.link)
        self.resume_pending()
        self.pulse.beat()
        self.call_after_refresh(self.collector.start)
        self.set_interval(self.IDLE_COLLECT_SECONDS, self._collect_if_idle)

    IDLE_COLLECT_SECONDS = 30.0

    def collect_garbage_soon(self) -> None:
        """A sale is over: collect while the cashier reads the screen, not mid-checkout."""
        self.call_after_refresh(self.collector.collect)

    def _collect_if_idle(self) -> None:
        from pos_terminal.screens.card import CardScreen
        from pos_terminal.screens.checkout import CheckoutScreen

        if not isinstance(self.screen, CheckoutScreen | CardScreen):
            self.collector.collect()

    @property
    def currency(self) -> str:
        return self.merchant.currency if self.merchant else "EUR"

    # -- the payment stream ------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.link == "online"

    def watch_link(self, link: str) -> None:
        self.status_signal.publish(link)
        self.pulse.beat()

    @work(exclusive=True, group="stream", exit_on_error=False, description="payment stream")
    async def watch_stream(self) -> None:
        """Follow WatchPayments forever; on a drop, back off and resume from the saved cursor."""
        delay = self.backoff.initial

        def opened() -> None:
            self.link = "online"

        while True:
            try:
                async for event in self.client.watch_payments(self.journal.cursor, on_open=opened):
                    self.link = "online"
                    delay = self.backoff.initial
                    self.stream_error = None
                    self.events_seen += 1
                    self.journal.set_cursor(event.cursor)
                    self.remember(event.payment, event.type)
            except ClientError as exc:
                self.stream_error = exc
            except Exception as exc:  # never let the stream die: reconnect whatever happened
                self.stream_error = ClientError("UNKNOWN", repr(exc))
            self.link = "offline"
            await asyncio.sleep(delay)
            delay = self.backoff.next(delay)

    def remember(self, payment: Payment, event: EventType | None = None) -> Payment:
        """Merge ``payment`` into the till's view and tell the screens; returns the newest."""
        known = self.payments.get(payment.id)
        if known is None or event is not None or _newer(payment, known):
            self.payments[payment.id] = payment
            known = payment
            self.payment_signal.publish(PaymentUpdate(payment, event))
            self.pulse.beat()
        return known

    # -- unfinished work from a previous run --------------------------------------------

    @work(group="resume", exit_on_error=False, description="resume unfinished requests")
    async def resume_pending(self) -> None:
        from pos_terminal.screens.checkout import CheckoutScreen
        from pos_terminal.screens.dialogs import ConfirmScreen

        for entry in self.journal.pending():
            try:
                if entry.kind == "checkout":
                    if entry.payment_id:
                        payment = self.remember(await self.client.get_payment(entry.payment_id))
                        if payment.status.is_final:
                            await asyncio.to_thread(self.journal.finish, entry.idempotency_key)
                            self.notify(
                                f"Order {entry.order_id}: {payment.status.label} "
                                "(while the till was away).",
                                title="Earlier checkout",
                            )
                            continue
                    amount = entry_money(entry)
                    resume = await self.push_screen(
                        ConfirmScreen(
                            f"An unfinished checkout was found: order {entry.order_id}, "
                            f"{amount.format()}.\n\nShow its QR code again? It is the same "
                            "payment: it cannot be charged twice.\n\n"
                            "Enter: show it again   Esc: cancel it",
                            title="Unfinished checkout",
                        ),
                        wait_for_dismiss=True,
                    )
                    if resume:
                        await self.push_screen(CheckoutScreen.resume(entry))
                        return
                    self.abandon_checkout(entry)
                elif entry.kind == "refund":
                    amount = entry_money(entry)
                    again = await self.push_screen(
                        ConfirmScreen(
                            f"A refund of {amount.format()} for order {entry.order_id} was "
                            "interrupted.\n\nSend it again? It will not be refunded twice.",
                            title="Unfinished refund",
                        ),
                        wait_for_dismiss=True,
                    )
                    if again:
                        payment = await self.client.refund_payment(
                            entry.payment_id,
                            amount,
                            reason=entry.description,
                            idempotency_key=entry.idempotency_key,
                        )
                        self.remember(payment)
                        self.notify(f"Refunded {amount.format()} on order {entry.order_id}.")
                    await asyncio.to_thread(self.journal.finish, entry.idempotency_key)
                elif entry.kind == "card":
                    page = await self.client.list_payments(order_id=entry.order_id)
                    for payment in page.payments:
                        self.remember(payment)
                        self.notify(f"Card order {entry.order_id}: {payment.status.label}.")
                    await asyncio.to_thread(self.journal.finish, entry.idempotency_key)
                else:
                    # Cancels, voids and batch closes: the cashier can simply do them again.
                    await asyncio.to_thread(self.journal.finish, entry.idempotency_key)
            except ClientError as exc:
                if exc.unavailable:
                    return  # try again on the next start; nothing is lost
                await asyncio.to_thread(self.journal.finish, entry.idempotency_key)

    @work(group="abandon", exit_on_error=False, description="cancel an abandoned checkout")
    async def abandon_checkout(self, entry: Entry) -> None:
        """Make sure an order the cashier gave up on cannot be paid any more."""
        delay = self.backoff.initial
        cancel_key = entry.extra.get("cancel_key") or new_key()
        if not entry.extra.get("cancel_key"):
            extra = {**entry.extra, "cancel_key": cancel_key}
            await asyncio.to_thread(self.journal.update, entry.idempotency_key, extra=extra)
        for _ in range(8):
            try:
                # Replaying the creation with its key returns the payment if it exists.
                payment = await self.client.create_payment(
                    order_id=entry.order_id,
                    amount=entry_money(entry),
                    description=entry.description,
                    idempotency_key=entry.idempotency_key,
                )
                if payment.status == PaymentStatus.PENDING:
                    payment = await self.client.cancel_payment(
                        payment.id, idempotency_key=cancel_key
                    )
                self.remember(payment)
            except ClientError as exc:
                if exc.unavailable:
                    await asyncio.sleep(delay)
                    delay = self.backoff.next(delay)
                    continue
            await asyncio.to_thread(self.journal.finish, entry.idempotency_key)
            return

    # -- housekeeping -------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.pulse.beat()

    async def on_unmount(self) -> None:
        self.collector.stop()
        await self.client.close()
        self.journal.close()


def entry_money(entry: Entry) -> Money:
    return Money(entry.amount_minor, entry.currency)
