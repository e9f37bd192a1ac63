"""End of day: today's totals by method, refunds, fees and net; the card batch close."""

from __future__ import annotations

import asyncio

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from pos_terminal.client import Batch, ClientError, DailySummary
from pos_terminal.journal import Entry, new_key
from pos_terminal.screens.base import PosScreen
from pos_terminal.screens.dialogs import ConfirmScreen
from pos_terminal.widgets.status import ConnectionStatus
from psp_server.domain.money import Money


def summary_lines(summary: DailySummary, width: int = 48) -> list[str]:
    def row(label: str, value: str) -> str:
        return f"{label:<{width - 20}}{value:>20}"

    def minus(amount: Money) -> str:
        return f"-{amount.format()}" if amount.is_positive else amount.format()

    lines = [f"Day {summary.date}", "-" * width]
    for total in summary.totals:
        lines.append(row(f"{total.method.label} ({total.count})", total.gross.format()))
    lines += [
        "-" * width,
        row(f"Gross ({summary.payment_count} payments)", summary.gross.format()),
        row(f"Refunds ({summary.refund_count})", minus(summary.refunds)),
        row("Fees", minus(summary.fees)),
        "=" * width,
        row("Net", summary.net.format()),
    ]
    return lines


def batch_lines(batch: Batch, width: int = 48) -> list[str]:
    """The settlement summary of a closed card batch: count, gross, network fees, net."""

    def row(label: str, value: str) -> str:
        return f"{label:<{width - 20}}{value:>20}"

    fees = batch.interchange + batch.scheme_fees

    def minus(amount: Money) -> str:
        return f"-{amount.format()}" if amount.is_positive else amount.format()

    return [
        f"Card batch {batch.id}",
        "-" * width,
        row("Transactions settled", str(batch.count)),
        row("Gross", batch.gross.format()),
        row("  interchange", minus(batch.interchange)),
        row("  scheme fees", minus(batch.scheme_fees)),
        row("Fees", minus(fees)),
        "=" * width,
        row("Net to be paid out", batch.net.format()),
    ]


class EndOfDayScreen(PosScreen[None]):
    BINDINGS = [  # noqa: RUF012
        Binding("b", "close_batch", "Close card batch"),
        Binding("f6", "reload", "Reload"),
        Binding("escape", "app.switch_mode('sale')", "Back to sale"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.summary: DailySummary | None = None
        self.last_batch: Batch | None = None

    def compose(self) -> ComposeResult:
        yield ConnectionStatus()
        with VerticalScroll(id="day"):
            yield Static("End of day", id="day-title")
            yield Static("Loading…", id="summary", markup=False)
            yield Static("", id="batch", markup=False)
            yield Static("", id="message", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.load()

    @property
    def summary_text(self) -> str:
        return str(self.query_one("#summary", Static).content)

    @property
    def batch_text(self) -> str:
        return str(self.query_one("#batch", Static).content)

    @property
    def message(self) -> str:
        return str(self.query_one("#message", Static).content)

    def _say(self, text: str, *, error: bool = False) -> None:
        widget = self.query_one("#message", Static)
        widget.set_class(error, "error")
        widget.update(text)

    @work(exclusive=True, group="load", exit_on_error=False, description="daily summary")
    async def load(self) -> None:
        token = self.guard.begin("load")
        try:
            summary = await self.pos.client.get_daily_summary()
        except ClientError as exc:
            if not self.guard.stale(token, self):
                what = "the PSP is unreachable" if exc.unavailable else exc.reason
                self._say(f"Could not get the day's totals: {what}. F6 reloads.", error=True)
            return
        if self.guard.stale(token, self):
            return
        self.summary = summary
        self.query_one("#summary", Static).update("\n".join(summary_lines(summary)))

    def action_reload(self) -> None:
        self.load()

    def action_close_batch(self) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self.close_batch()

        self.app.push_screen(
            ConfirmScreen(
                "Close today's card batch and send it for settlement?", title="Close batch"
            ),
            confirmed,
        )

    @work(exclusive=True, group="batch", exit_on_error=False, description="close batch")
    async def close_batch(self) -> None:
        token = self.guard.begin("batch")
        self._say("Closing the card batch…")
        journal = self.pos.journal
        pending = journal.pending("batch")
        entry = pending[0] if pending else None
        if entry is None:
            entry = await asyncio.to_thread(
                journal.record, Entry(kind="batch", idempotency_key=new_key())
            )
        try:
            batch = await self.pos.client.close_batch(idempotency_key=entry.idempotency_key)
        except ClientError as exc:
            if not exc.unavailable:
                await asyncio.to_thread(journal.finish, entry.idempotency_key)
            if self.guard.stale(token, self):
                return
            if exc.unimplemented:
                self._say(
                    "Card batch close is not available yet: card payments are not "
                    "available yet. The QR totals above are final.",
                    error=True,
                )
            elif exc.unreachable:
                self._say("Cannot reach the PSP. Press b to try again.", error=True)
            elif exc.card_network:
                self._say(
                    "The card network did not answer the batch close. Press b to try again.",
                    error=True,
                )
            elif exc.reason == "CARD_BATCH_OUT_OF_BALANCE":
                self._say(
                    "The card network's totals differ from the PSP's; the batch is still "
                    "open. Call support before trying again.",
                    error=True,
                )
            else:
                self._say(f"Batch close refused: {exc.reason}.", error=True)
            return
        await asyncio.to_thread(journal.finish, entry.idempotency_key)
        if self.guard.stale(token, self):
            return
        self.last_batch = batch
        if batch.count == 0:
            self.query_one("#batch", Static).update("")
            self._say(
                "Nothing new to settle: no card payments or refunds since the last batch "
                "close. The batch is closed and empty."
            )
        else:
            self.query_one("#batch", Static).update("\n".join(batch_lines(batch)))
            self._say(f"Card batch closed: {batch.count} transaction(s) sent for settlement.")
        self.load()
