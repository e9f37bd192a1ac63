"""Today's payments, kept current by the payment stream; Enter opens one."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from pos_terminal.client import ClientError, Payment
from pos_terminal.receipt import local_time
from pos_terminal.screens.base import PosScreen
from pos_terminal.widgets.status import ConnectionStatus

MAX_PAGES = 20
_COLUMNS = ("time", "order", "method", "amount", "status", "refunded")
_LABELS = ("Time", "Order", "Paid by", "Amount", "Status", "Refunded")
_WIDTHS = (5, 12, 9, 14, 13, 13)


def start_of_today() -> datetime:
    return datetime.combine(datetime.now().date(), time.min).astimezone()


def _row(payment: Payment) -> tuple[str, ...]:
    refunded = payment.refunded_amount
    return (
        local_time(payment.created_at)[11:16],
        payment.order_id,
        payment.method.label,
        payment.amount.format(),
        payment.status.label,
        refunded.format() if refunded.is_positive else "",
    )


class HistoryScreen(PosScreen[None]):
    BINDINGS = [  # noqa: RUF012
        Binding("enter", "open", "Open", priority=True),
        Binding("f6", "reload", "Reload"),
        Binding("escape", "app.switch_mode('sale')", "Back to sale"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, Payment] = {}

    def compose(self) -> ComposeResult:
        yield ConnectionStatus()
        yield Static("Today's payments", id="history-title")
        table: DataTable[str] = DataTable(id="payments", cursor_type="row", zebra_stripes=True)
        for label, key, width in zip(_LABELS, _COLUMNS, _WIDTHS, strict=True):
            table.add_column(label, key=key, width=width)
        yield table
        yield Static("Loading…", id="message", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.pos.payment_signal.subscribe(self, lambda update: self.upsert(update.payment))
        self.query_one(DataTable).focus()
        self.load()

    def on_screen_resume(self) -> None:
        self.query_one(DataTable).focus()

    def _say(self, text: str, *, error: bool = False) -> None:
        message = self.query_one("#message", Static)
        message.set_class(error, "error")
        message.update(text)

    def upsert(self, payment: Payment) -> None:
        """Add or refresh a row (newest first); payments from earlier days stay out."""
        created = payment.created_at
        if created is not None and created < start_of_today():
            return
        table = self.query_one(DataTable)
        known = payment.id in self.rows
        self.rows[payment.id] = payment
        if known:
            for key, value in zip(_COLUMNS, _row(payment), strict=True):
                table.update_cell(payment.id, key, value)
        else:
            # Newest first: rebuild, keeping the cursor on the row it was on.
            selected = self.selected_id
            table.clear()
            newest_first = sorted(
                self.rows.values(),
                key=lambda p: (p.created_at or datetime.max.astimezone(), p.id),
                reverse=True,
            )
            for p in newest_first:
                table.add_row(*_row(p), key=p.id)
            if selected is not None:
                table.move_cursor(row=table.get_row_index(selected))
        self._say(f"{len(self.rows)} payment(s) today. Enter opens the selected one.")

    @property
    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not self.rows or table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    @work(exclusive=True, group="load", exit_on_error=False, description="list payments")
    async def load(self) -> None:
        token = self.guard.begin("load")
        since = start_of_today()
        found: list[Payment] = []
        page_token = ""
        try:
            for _ in range(MAX_PAGES):
                page = await self.pos.client.list_payments(
                    created_from=since,
                    created_to=since + timedelta(days=1),
                    page_size=200,
                    page_token=page_token,
                )
                found.extend(page.payments)
                page_token = page.next_page_token
                if not page_token:
                    break
        except ClientError as exc:
            if not self.guard.stale(token, self):
                what = "the PSP is unreachable" if exc.unavailable else exc.reason
                self._say(f"Could not load the payments: {what}. F6 reloads.", error=True)
            return
        if self.guard.stale(token, self):
            return
        for payment in found:
            self.upsert(self.pos.remember(payment))
        if not self.rows:
            self._say("No payments yet today.")

    def action_reload(self) -> None:
        self.load()

    def action_open(self) -> None:
        from pos_terminal.screens.payment import PaymentScreen

        selected = self.selected_id
        if selected in self.rows:
            self.app.push_screen(PaymentScreen(selected))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()
