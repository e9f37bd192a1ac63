"""Small dialogs: a yes/no confirmation and an amount prompt."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Static

from pos_terminal.screens.base import PosModal
from pos_terminal.widgets.inputs import MoneyInput
from psp_server.domain.money import Money, MoneyError


class ConfirmScreen(PosModal[bool]):
    """Asks one question; Enter says yes, Esc says no."""

    BINDINGS = [  # noqa: RUF012
        Binding("enter", "answer(True)", "Yes", priority=True),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, title: str = "Please confirm") -> None:
        super().__init__()
        self.question = question
        self.heading = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.heading, classes="dialog-title")
            yield Static(self.question, id="question", classes="dialog-body")
        yield Footer(compact=True)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class AmountScreen(PosModal[Money | None]):
    """Asks for an amount up to ``maximum``; Enter accepts, Esc gives up."""

    BINDINGS = [  # noqa: RUF012
        Binding("enter", "accept", "OK", priority=True),
        Binding("escape", "dismiss(None)", "Back"),
    ]

    def __init__(self, question: str, *, default: Money, maximum: Money, title: str) -> None:
        super().__init__()
        self.question = question
        self.default = default
        self.maximum = maximum
        self.heading = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.heading, classes="dialog-title")
            yield Static(self.question, classes="dialog-body")
            field = MoneyInput(id="amount")
            field.value = self.default.decimal_string()
            yield field
            yield Static("", id="error", classes="error")
        yield Footer(compact=True)

    def action_accept(self) -> None:
        text = self.query_one("#amount", MoneyInput).amount_text
        error = self.query_one("#error", Static)
        try:
            amount = Money.parse(text, self.maximum.currency)
        except MoneyError as exc:
            error.update(str(exc))
            return
        if not amount.is_positive:
            error.update("Type an amount above zero.")
            return
        if amount > self.maximum:
            error.update(f"At most {self.maximum.format()}.")
            return
        self.dismiss(amount)
