"""A QR code drawn with Unicode half blocks, readable by a phone from the screen.

Every cell is ``▀``: its foreground is the upper module, its background the lower one, dark
on light. The code gets a quiet zone of up to four modules (at least two); when even that does
not fit, the widget says so instead of drawing a cut code that would not scan.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache

import qrcode
from qrcode.constants import ERROR_CORRECT_M
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

UPPER_HALF = "▀"
DARK = "#000000"
LIGHT = "#ffffff"

_CELL = {
    (upper, lower): Style(color=DARK if upper else LIGHT, bgcolor=DARK if lower else LIGHT)
    for upper in (False, True)
    for lower in (False, True)
}


@lru_cache(maxsize=16)
def qr_matrix(payload: str) -> tuple[tuple[bool, ...], ...]:
    """The modules of ``payload`` (error correction M, smallest version), no quiet zone."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=0)
    code.add_data(payload)
    code.make(fit=True)
    return tuple(tuple(bool(m) for m in row) for row in code.get_matrix())


def half_block_rows(matrix: tuple[tuple[bool, ...], ...], quiet: int) -> list[list[Segment]]:
    """Rows of ``▀`` segments for ``matrix`` with a ``quiet``-module light border."""
    n = len(matrix)
    size = n + 2 * quiet
    blank = (False,) * size

    def module_row(y: int) -> tuple[bool, ...]:
        if quiet <= y < quiet + n:
            return (False,) * quiet + matrix[y - quiet] + (False,) * quiet
        return blank

    rows: list[list[Segment]] = []
    for y in range(0, size, 2):
        upper, lower = module_row(y), module_row(y + 1)
        segments: list[Segment] = []
        run_style: Style | None = None
        run = 0
        for x in range(size):
            style = _CELL[upper[x], lower[x]]
            if style is run_style:
                run += 1
                continue
            if run_style is not None:
                segments.append(Segment(UPPER_HALF * run, run_style))
            run_style, run = style, 1
        if run_style is not None:
            segments.append(Segment(UPPER_HALF * run, run_style))
        rows.append(segments)
    return rows


def footprint(modules: int, quiet: int) -> Size:
    """Cells needed for a code of ``modules`` with a ``quiet`` zone: width x height."""
    side = modules + 2 * quiet
    return Size(side, (side + 1) // 2)


class QrCode(Widget):
    """Shows ``payload`` as a half-block QR code, centred in the space it gets."""

    DEFAULT_CSS = """
    QrCode {
        width: 1fr;
        height: 1fr;
    }
    """

    payload: reactive[str] = reactive("")

    def __init__(
        self,
        payload: str = "",
        *,
        max_quiet: int = 4,
        min_quiet: int = 2,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.max_quiet = max_quiet
        self.min_quiet = min_quiet
        self._cache: tuple[str, Size, list[Strip]] | None = None
        self.set_reactive(QrCode.payload, payload)

    @property
    def modules(self) -> int:
        return len(qr_matrix(self.payload)) if self.payload else 0

    def quiet_zone_for(self, size: Size) -> int | None:
        """The widest quiet zone that fits in ``size``, or ``None`` when the code does not fit."""
        n = self.modules
        for quiet in range(self.max_quiet, self.min_quiet - 1, -1):
            need = footprint(n, quiet)
            if need.width <= size.width and need.height <= size.height:
                return quiet
        return None

    @property
    def quiet_zone(self) -> int | None:
        return self.quiet_zone_for(self.size) if self.payload else None

    @property
    def fits(self) -> bool:
        return not self.payload or self.quiet_zone is not None

    def watch_payload(self) -> None:
        self._cache = None
        self.refresh()

    def _strips(self) -> list[Strip]:
        size = self.size
        if self._cache is not None and self._cache[:2] == (self.payload, size):
            return self._cache[2]
        base = self.rich_style
        strips: list[Strip] = []
        quiet = self.quiet_zone_for(size) if self.payload else None
        if self.payload and quiet is None:
            need = footprint(self.modules, self.min_quiet)
            screen = self.app.size
            want_w = screen.width + max(0, need.width - size.width)
            want_h = screen.height + max(0, need.height - size.height)
            message = (
                "The window is too small for the QR code. "
                f"Enlarge the terminal to at least {want_w}x{want_h} to show it."
            )
            lines = textwrap.wrap(message, max(8, size.width - 2))
            warn = base + Style(bold=True, color="yellow")
            top = max(0, (size.height - len(lines)) // 2)
            for y in range(size.height):
                i = y - top
                text = lines[i] if 0 <= i < len(lines) else ""
                text = text[: size.width].center(size.width)
                strips.append(Strip([Segment(text, warn)], size.width))
        elif self.payload and quiet is not None:
            rows = half_block_rows(qr_matrix(self.payload), quiet)
            width = footprint(self.modules, quiet).width
            left = (size.width - width) // 2
            right = size.width - width - left
            top = (size.height - len(rows)) // 2
            for y in range(size.height):
                i = y - top
                if 0 <= i < len(rows):
                    segments = [Segment(" " * left, base), *rows[i], Segment(" " * right, base)]
                    strips.append(Strip(segments, size.width))
                else:
                    strips.append(Strip.blank(size.width, base))
        else:
            strips = [Strip.blank(size.width, base) for _ in range(size.height)]
        self._cache = (self.payload, size, strips)
        return strips

    def render_line(self, y: int) -> Strip:
        strips = self._strips()
        if 0 <= y < len(strips):
            return strips[y]
        return Strip.blank(self.size.width, self.rich_style)

    def on_resize(self) -> None:
        self._cache = None
        self.refresh()
