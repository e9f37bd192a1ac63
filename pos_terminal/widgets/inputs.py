"""Keyboard widgets: the amount field and the magstripe reader's keyboard-wedge capture."""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input

AMOUNT_PATTERN = r"[0-9]*([.,][0-9]*)?"


class MoneyInput(Input):
    """Digits and one decimal separator (``.`` or ``,``)."""

    def __init__(self, *, id: str | None = None, placeholder: str = "0.00") -> None:
        super().__init__(placeholder=placeholder, restrict=AMOUNT_PATTERN, id=id, max_length=15)

    @property
    def amount_text(self) -> str:
        """The typed amount with ``.`` as decimal separator (``1,20`` is one euro twenty)."""
        return self.value.strip().replace(",", ".")


class AmountInput(MoneyInput):
    """The sale's amount field; ``+`` adds what was typed as a line item.

    Keys are handled in the order they were typed (no priority bindings), so a fast typist
    or a scanner typing ``4`` then Enter charges 4, not an empty field.
    """

    BINDINGS = [  # noqa: RUF012
        Binding("enter", "submit", "Charge QR"),
        Binding("plus", "add_item", "Add item"),
    ]

    class AddItem(Message):
        """The cashier pressed ``+`` after typing ``text`` (the field is already cleared)."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def action_add_item(self) -> None:
        # Take the text and clear the field here, in key order: keys typed right after the
        # ``+`` belong to the next item.
        text = self.amount_text
        self.value = ""
        self.post_message(self.AddItem(text))

    async def _on_key(self, event: events.Key) -> None:
        if event.character == "+":
            event.stop()
            event.prevent_default()
            self.action_add_item()
            return
        await super()._on_key(event)


class ItemInput(Input):
    """A line item's description; Enter charges like in the amount field."""

    BINDINGS = [  # noqa: RUF012
        Binding("enter", "submit", "Charge QR"),
    ]


class _Secret:
    """Holds swipe text; never shows it in a repr, log line or worker description."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<track data>"

    __str__ = __repr__


class SwipeCapture(Widget, can_focus=True):
    """Takes what a keyboard-wedge card reader types, without echoing any of it.

    The reader types ``%B...^...^...?;...=...?`` and Enter in a burst. Only a "reading" hint
    shows; on Enter the text goes out in a :class:`Swiped` message and the buffer is wiped.
    An unfinished burst is dropped after ``idle_timeout`` seconds.
    """

    DEFAULT_CSS = """
    SwipeCapture {
        height: 3;
        border: round $accent;
        padding: 0 1;
        content-align: center middle;
    }
    SwipeCapture:focus {
        border: round $success;
    }
    """

    reading: reactive[bool] = reactive(False)

    class Swiped(Message):
        """A complete swipe. ``track_data`` must go only to the PSP."""

        def __init__(self, track_data: _Secret) -> None:
            super().__init__()
            self.track_data = track_data

    def __init__(self, *, idle_timeout: float = 2.0, id: str | None = None) -> None:
        super().__init__(id=id)
        self._buffer: list[str] = []
        self.idle_timeout = idle_timeout
        self._timer: Timer | None = None

    def render(self) -> str:
        if self.reading:
            return "reading card…"
        return "swipe the card now" if self.has_focus else "press Tab to take a swipe"

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def _drop(self) -> None:
        self._buffer.clear()
        self.reading = False

    def on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = "".join(self._buffer)
            self._drop()
            if text:
                self.post_message(self.Swiped(_Secret(text)))
            return
        if event.character and event.is_printable:
            event.stop()
            event.prevent_default()
            self._buffer.append(event.character)
            self.reading = True
            if self._timer is not None:
                self._timer.stop()
            self._timer = self.set_timer(self.idle_timeout, self._drop)
