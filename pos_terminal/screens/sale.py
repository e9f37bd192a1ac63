"""Ring up a sale: an amount, optional line items, then QR (Enter) or card (F2)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, Label, Static

from pos_terminal.client import PaymentStatus
from pos_terminal.screens.base import PosScreen
from pos_terminal.widgets.inputs import AmountInput, ItemInput
from pos_terminal.widgets.status import ConnectionStatus
from psp_server.domain.money import Money, MoneyError

MAX_DESCRIPTION = 200


@dataclass(frozen=True, slots=True)
class LineItem:
    description: str
    amount: Money


class SaleScreen(PosScreen[None]):
    BINDINGS = [  # noqa: RUF012
        Binding("enter", "charge_qr", "Charge QR"),
        Binding("f2", "charge_card", "Card"),
        Binding("f3", "app.switch_mode('history')", "History"),
        Binding("f4", "app.switch_mode('static')", "Static QR"),
        Binding("f5", "app.switch_mode('day')", "End of day"),
        Binding("escape", "clear", "Clear"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.items: list[LineItem] = []

    def compose(self) -> ComposeResult:
        yield ConnectionStatus()
        with Vertical(id="sale"):
            with Horizontal(classes="field"):
                yield Label("Amount", classes="field-label")
                yield AmountInput(id="amount")
                yield Label("EUR", id="currency", classes="field-unit")
            with Horizontal(classes="field"):
                yield Label("Item", classes="field-label")
                yield ItemInput(
                    placeholder="description (optional)", id="description", max_length=40
                )
            items: DataTable[str] = DataTable(id="items", cursor_type="none", show_cursor=False)
            items.add_column("Item", key="item", width=44)
            items.add_column("Amount", key="amount", width=16)
            yield items
            yield Static("", id="total", markup=False)
            yield Static(
                "Type the amount; + adds it as a line item. Enter: QR code, F2: card.",
                id="message",
                markup=False,
            )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#amount", AmountInput).focus()
        self.pos.status_signal.subscribe(self, lambda _link: self._refresh_total())
        self._refresh_total()

    # -- helpers ------------------------------------------------------------------------

    @property
    def currency(self) -> str:
        return self.pos.currency

    def _say(self, text: str, *, error: bool = False) -> None:
        message = self.query_one("#message", Static)
        message.set_class(error, "error")
        message.update(text)

    def _typed(self) -> Money | None:
        """The amount in the field, ``None`` when empty; raises ``MoneyError`` if malformed."""
        return self._parse(self.query_one("#amount", AmountInput).amount_text)

    def _parse(self, text: str) -> Money | None:
        if not text:
            return None
        amount = Money.parse(text, self.currency)
        if not amount.is_positive:
            raise MoneyError("INVALID_AMOUNT", "type an amount above zero")
        return amount

    def _refresh_total(self) -> None:
        self.query_one("#currency", Label).update(self.currency)
        total = Money.zero(self.currency)
        for item in self.items:
            total += item.amount
        count = len(self.items)
        try:
            typed = self._typed()
        except MoneyError:
            typed = None
        if typed is not None:
            total += typed
            count += 1
        self.query_one("#items", DataTable).display = bool(self.items)
        suffix = f" ({count} item{'s' if count != 1 else ''})" if count > 1 else ""
        self.query_one("#total", Static).update(f"Total {total.format()}{suffix}")

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "amount":
            self._refresh_total()

    def _sale(self) -> tuple[Money, str] | None:
        """The amount to charge and its description, or ``None`` after telling the cashier."""
        try:
            typed = self._typed()
        except MoneyError as exc:
            self._say(f"Not a valid amount: {exc}", error=True)
            return None
        items = list(self.items)
        if typed is not None and items:
            description = self.query_one("#description", Input).value.strip()
            items.append(LineItem(description or f"Item {len(items) + 1}", typed))
        if not items:
            if typed is None:
                self._say("Type an amount first.", error=True)
                return None
            description = self.query_one("#description", Input).value.strip()
            return typed, description
        total = Money.zero(self.currency)
        for item in items:
            total += item.amount
        text = "; ".join(f"{i.description} {i.amount.decimal_string()}" for i in items)
        return total, text[:MAX_DESCRIPTION]

    # -- line items -------------------------------------------------------------------------

    def on_amount_input_add_item(self, event: AmountInput.AddItem) -> None:
        amount_field = self.query_one("#amount", AmountInput)
        try:
            typed = self._parse(event.text)
        except MoneyError as exc:
            amount_field.value = amount_field.value or event.text
            self._say(f"Not a valid amount: {exc}", error=True)
            return
        if typed is None:
            self._say("Type the item's amount, then +.", error=True)
            return
        description_field = self.query_one("#description", Input)
        description = description_field.value.strip() or f"Item {len(self.items) + 1}"
        self.items.append(LineItem(description, typed))
        self.query_one("#items", DataTable).add_row(description, typed.format())
        description_field.value = ""
        amount_field.focus()
        self._say(f"Added {description} {typed.format()}.")
        self._refresh_total()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_charge_qr()

    # -- actions -----------------------------------------------------------------------------

    def action_clear(self) -> None:
        self.items.clear()
        self.query_one("#items", DataTable).clear()
        self.query_one("#amount", AmountInput).value = ""
        self.query_one("#description", Input).value = ""
        self.query_one("#amount", AmountInput).focus()
        self._say("Cleared. Type the amount.")
        self._refresh_total()

    def action_charge_qr(self) -> None:
        from pos_terminal.screens.checkout import CheckoutScreen

        if self.pos.merchant is None:
            self._say("Not connected to the PSP yet.", error=True)
            return
        sale = self._sale()
        if sale is None:
            return
        amount, description = sale
        self._say(f"Charging {amount.format()} by QR…")
        self.app.push_screen(CheckoutScreen(amount, description), self._finished)

    def action_charge_card(self) -> None:
        from pos_terminal.screens.card import CardScreen

        if self.pos.merchant is None:
            self._say("Not connected to the PSP yet.", error=True)
            return
        sale = self._sale()
        if sale is None:
            return
        amount, description = sale
        self._say(f"Charging {amount.format()} by card…")
        self.app.push_screen(CardScreen(amount, description), self._finished)

    def _finished(self, status: PaymentStatus | None) -> None:
        """Back from a checkout: start afresh after a payment, keep the sale otherwise."""
        self.pos.collect_garbage_soon()
        if status is not None and status.is_paid:
            self.action_clear()
            self._say(f"Last sale {status.label}. Type the next amount.")
        elif status is not None:
            self._say(f"Last attempt: {status.label}. The sale is still here to try again.")
        else:
            self._say("The sale is still here to try again.")
        self.query_one("#amount", AmountInput).focus()
