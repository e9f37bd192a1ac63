"""Helpers for driving the till headless (tests, benchmarks): waiting without sleeping, and
reading the QR code back from the till's own screenshot with real decoders."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.pilot import Pilot

    from pos_terminal.app import PosApp

#: Render the SVG screenshot with a monospace font whose block glyphs fill their cells.
SCREENSHOT_CSS = "text { font-family: 'DejaVu Sans Mono', monospace; }"


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until every worker but the endless payment stream has finished."""
    app = pilot.app
    for _ in range(50):
        busy = [w for w in app.workers if w.group != "stream" and not w.is_finished]
        if not busy:
            break
        await app.workers.wait_for_complete(busy)
        await pilot.pause()
    await pilot.pause()


async def until(
    pilot: Pilot[Any], predicate: Callable[[], object], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Wait for ``predicate()`` to hold, waking on the app's pulse (no fixed sleeps)."""
    app: PosApp = pilot.app  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await pilot.pause()
        if predicate():
            return
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await app.pulse.wait(min(left, 0.25))


def svg_to_png(svg: str, *, renderer: str = "cairosvg", scale: float = 1.0) -> bytes:
    """Rasterize a Textual SVG screenshot."""
    if renderer == "rsvg":
        exe = shutil.which("rsvg-convert")
        if exe is None:
            raise RuntimeError("rsvg-convert is not installed (Debian librsvg2-bin)")
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".css") as css:
            css.write(SCREENSHOT_CSS)
            css.flush()
            result = subprocess.run(
                [exe, "-z", str(scale), "-s", css.name],
                input=svg.encode(),
                capture_output=True,
                check=True,
            )
        return result.stdout
    import cairosvg

    png: bytes = cairosvg.svg2png(bytestring=svg.encode(), scale=scale)
    return png


def decode_qr(png: bytes) -> dict[str, list[str]]:
    """What each decoder reads in ``png``: ``{"zxing": [...], "zbar": [...]}``."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    found: dict[str, list[str]] = {"zxing": [], "zbar": []}
    try:
        import zxingcpp

        found["zxing"] = [r.text for r in zxingcpp.read_barcodes(image)]
    except ImportError:
        pass
    try:
        from pyzbar import pyzbar

        found["zbar"] = [r.data.decode() for r in pyzbar.decode(image)]
    except ImportError:
        pass
    return found


async def type_burst(pilot: Pilot[Any], text: str, *, enter: bool = True) -> None:
    """Type ``text`` the way a keyboard-wedge reader does: one burst of key events, no pauses
    in between (``pilot.press`` waits for the app to go idle after every key)."""
    from textual import events
    from textual.keys import _character_to_key

    app = pilot.app
    for ch in text:
        key = ch if ch.isalnum() else _character_to_key(ch)
        app.post_message(events.Key(key, ch))
    if enter:
        app.post_message(events.Key("enter", "\r"))
    await pilot.pause()
    await pilot.pause()


async def press_burst(pilot: Pilot[Any], *keys: str) -> None:
    """Like ``pilot.press`` but without waiting for idle after each key (named keys only
    for non-characters, e.g. ``"backspace"``); ordered, like a fast typist."""
    from textual import events
    from textual.keys import _character_to_key

    app = pilot.app
    for key in keys:
        if len(key) == 1:
            name = key if key.isalnum() else _character_to_key(key)
            app.post_message(events.Key(name, key))
        else:
            app.post_message(events.Key(key, None))
    await pilot.pause()
    await pilot.pause()
