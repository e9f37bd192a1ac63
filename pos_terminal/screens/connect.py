"""The first screen: reach the PSP and check the terminal's key, saying plainly what is wrong."""

from __future__ import annotations

import asyncio

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Static

from pos_terminal.client import ClientError
from pos_terminal.screens.base import PosScreen


class ConnectScreen(PosScreen[None]):
    BINDINGS = [  # noqa: RUF012
        Binding("r", "retry", "Retry now"),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("scanpay till", classes="dialog-title")
            yield Static("", id="message", classes="dialog-body")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.connect()

    @property
    def message(self) -> str:
        return str(self.query_one("#message", Static).content)

    def _say(self, text: str, *, error: bool = False) -> None:
        widget = self.query_one("#message", Static)
        widget.set_class(error, "error")
        widget.update(text)

    def action_retry(self) -> None:
        self.connect()

    @work(exclusive=True, exit_on_error=False, description="connect to the PSP")
    async def connect(self) -> None:
        token = self.guard.begin()
        where = self.pos.psp_address or "the PSP"
        delay = self.pos.backoff.initial
        attempt = 0
        while True:
            attempt += 1
            self._say(f"Connecting to {where}…")
            try:
                merchant = await self.pos.client.get_merchant()
            except ClientError as exc:
                if self.guard.stale(token, self):
                    return
                if exc.reason == "INVALID_API_KEY" or exc.code == "UNAUTHENTICATED":
                    self._say(
                        f"The PSP at {where} rejected this till's API key "
                        f"({exc.reason}).\n\nCheck the key given with --key, "
                        "SCANPAY_TILL_KEY or the till's config.json, then start again.",
                        error=True,
                    )
                    return
                if exc.unavailable:
                    self._say(
                        f"Cannot reach the PSP at {where} ({exc.code}).\n\n"
                        f"Is it running? Trying again in {delay:.1f} s "
                        f"(attempt {attempt}); press r to retry now.",
                        error=True,
                    )
                    await asyncio.sleep(delay)
                    delay = self.pos.backoff.next(delay)
                    continue
                self._say(f"The PSP refused the connection: {exc.reason} {exc.message}", error=True)
                return
            if self.guard.stale(token, self):
                return
            self.dismiss(None)
            self.pos.connected(merchant)
            return
