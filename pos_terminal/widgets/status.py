"""The one-line connection banner: who this till is, and whether the PSP is reachable."""

from __future__ import annotations

from textual.widgets import Static


class ConnectionStatus(Static):
    """Shows the merchant and till; turns into an "offline, reconnecting" banner on a drop."""

    DEFAULT_CSS = """
    ConnectionStatus {
        height: 1;
        width: 1fr;
        padding: 0 1;
        background: $panel;
        color: $text-muted;
    }
    ConnectionStatus.-offline {
        background: $warning;
        color: $text;
        text-style: bold;
    }
    ConnectionStatus.-compact {
        background: transparent;
        padding: 0;
        height: auto;
    }
    ConnectionStatus.-compact.-offline {
        background: $warning;
    }
    """

    def on_mount(self) -> None:
        self.app.status_signal.subscribe(self, self._show)  # type: ignore[attr-defined]
        self._show(self.app.link)  # type: ignore[attr-defined]

    @property
    def offline(self) -> bool:
        return self.has_class("-offline")

    def _show(self, link: str) -> None:
        merchant = self.app.merchant  # type: ignore[attr-defined]
        compact = self.has_class("-compact")
        offline = link == "offline"
        if offline:
            text = (
                "⚠ offline, reconnecting…"
                if compact
                else "⚠ PSP offline, reconnecting… payments made meanwhile show up when back"
            )
        elif merchant is None:
            text = "connecting to the PSP…"
        else:
            dot = "● live" if link == "online" else "○ connecting"
            text = dot if compact else f"{merchant.name} · {merchant.terminal_label}   {dot}"
        self.set_class(offline, "-offline")
        self.update(text)
