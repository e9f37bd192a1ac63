"""The README's demo command, as a person runs it: ``scanpay demo --headless`` starts the
card network and the PSP, seeds the shop, plays a QR sale and a card sale, and exits 0
only if every step worked. Run twice on one data directory: the second run reuses the
shop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_demo(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "psp_server", "demo", "--headless", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def test_headless_demo_plays_a_full_sale(tmp_path: Path) -> None:
    first = run_demo(tmp_path / "demo")
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    for step in (
        "[ok ] QR created",
        "[ok ] wallet read the QR: verified merchant 'Corner Bakery'",
        "[ok ] paid",
        "[ok ] merchant told",
        "[ok ] card swipe approved: visa 411111******1111",
        "demo sale: all steps succeeded",
    ):
        assert step in out
    assert "[FAIL]" not in out
    # The QR was drawn in the terminal (block characters, no colour codes without a TTY).
    assert "█" in out and "\x1b[" not in out
    # No full PAN in what the demo printed or logged.
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "demo").glob("*.log"))
    assert "4111111111111111" not in out + logs

    second = run_demo(tmp_path / "demo")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "demo sale: all steps succeeded" in second.stdout
