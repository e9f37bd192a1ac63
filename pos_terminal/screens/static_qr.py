"""The shop's static QR: shown on screen, and saved as a printable PNG and PDF."""

from __future__ import annotations

import asyncio

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static

from pos_terminal.client import ClientError, StaticQr
from pos_terminal.printable import save_static_qr
from pos_terminal.screens.base import PosScreen
from pos_terminal.widgets.qr_code import QrCode
from pos_terminal.widgets.status import ConnectionStatus


class StaticQrScreen(PosScreen[None]):
    BINDINGS = [  # noqa: RUF012
        Binding("s", "save", "Save PNG+PDF"),
        Binding("f6", "reload", "Reload"),
        Binding("escape", "app.switch_mode('sale')", "Back to sale"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.static_qr: StaticQr | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="checkout"):
            yield QrCode(id="qr")
            with Vertical(id="side"):
                yield Static("STATIC QR", id="headline")
                yield Static("", id="merchant", markup=False)
                yield Static(
                    "The customer scans it and types the amount in the wallet.",
                    id="hint",
                    markup=False,
                )
                yield Static("Loading…", id="state", markup=False)
                yield ConnectionStatus(classes="-compact")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load()

    @property
    def message(self) -> str:
        return str(self.query_one("#state", Static).content)

    def _say(self, text: str, *, error: bool = False) -> None:
        widget = self.query_one("#state", Static)
        widget.set_class(error, "error")
        widget.update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "save" and self.static_qr is None:
            return None
        return True

    @work(exclusive=True, group="load", exit_on_error=False, description="static QR")
    async def load(self) -> None:
        token = self.guard.begin("load")
        try:
            static_qr = await self.pos.client.get_static_qr()
        except ClientError as exc:
            if not self.guard.stale(token, self):
                what = "the PSP is unreachable" if exc.unavailable else exc.reason
                self._say(f"Could not get the static QR: {what}. F6 reloads.", error=True)
            return
        if self.guard.stale(token, self):
            return
        self.static_qr = static_qr
        self.query_one(QrCode).payload = static_qr.qr_payload
        label = f"\n{static_qr.terminal_label}" if static_qr.terminal_label else ""
        self.query_one("#merchant", Static).update(f"{static_qr.merchant_name}{label}")
        self._say("s saves a printable PNG and PDF.")
        self.refresh_bindings()

    def action_reload(self) -> None:
        self.load()

    @work(exclusive=True, group="save", exit_on_error=False, description="save static QR")
    async def action_save(self) -> None:
        if self.static_qr is None:
            return
        try:
            png, pdf = await asyncio.to_thread(save_static_qr, self.static_qr, self.pos.data_dir)
        except OSError as exc:
            self._say(f"Could not save: {exc}", error=True)
            return
        self.saved = (png, pdf)
        self._say(f"Saved {png}\nand {pdf}")
