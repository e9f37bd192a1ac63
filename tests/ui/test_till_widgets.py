"""The till's pieces without a screen: half-block QR, swipe masking, journal, client retries."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Size

from pos_terminal.client import ClientError, RetryPolicy, with_retries
from pos_terminal.journal import CHUNK, Entry, Journal
from pos_terminal.swipe import mask, summarize
from pos_terminal.widgets.qr_code import UPPER_HALF, QrCode, footprint, half_block_rows, qr_matrix

# The shape of the PSP's dynamic payload: EMV MPM, QR-alphanumeric characters only.
PAYLOAD = (
    "00020101021226470007SCANPAY0108N3ETXJZ70220SFRKEOQT7W25JYNXRB2L5204546253039785405"
    "12.505802DE5913CORNER BAKERY6006BERLIN62150111261122-000163042C05"
)


def test_every_cell_is_an_upper_half_block_with_upper_fg_and_lower_bg() -> None:
    matrix = qr_matrix(PAYLOAD)
    assert len(matrix) == 41  # version 6 for a 147-character alphanumeric payload
    quiet = 2
    rows = half_block_rows(matrix, quiet)
    side = 41 + 2 * quiet
    assert len(rows) == (side + 1) // 2
    rebuilt: list[list[bool]] = []
    for segments in rows:
        upper: list[bool] = []
        lower: list[bool] = []
        for segment in segments:
            assert set(segment.text) == {UPPER_HALF}
            dark_fg = segment.style.color.name == "#000000"
            dark_bg = segment.style.bgcolor.name == "#000000"
            upper += [dark_fg] * len(segment.text)
            lower += [dark_bg] * len(segment.text)
        assert len(upper) == side
        rebuilt += [upper, lower]
    inner = [row[quiet : quiet + 41] for row in rebuilt[quiet : quiet + 41]]
    assert inner == [list(r) for r in matrix]
    assert not any(rebuilt[0]) and not any(row[0] for row in rebuilt)  # light quiet zone


@pytest.mark.parametrize(
    ("size", "quiet"),
    [((46, 23), 2), ((47, 24), 3), ((86, 39), 4), ((44, 23), None), ((46, 22), None)],
)
def test_the_quiet_zone_is_as_wide_as_fits_and_at_least_two(
    size: tuple[int, int], quiet: int | None
) -> None:
    widget = QrCode(PAYLOAD)
    assert widget.quiet_zone_for(Size(*size)) == quiet
    assert footprint(41, 2) == Size(45, 23)


class _QrApp(App[None]):
    def compose(self) -> ComposeResult:
        yield QrCode(PAYLOAD)


async def test_a_screen_too_small_says_so_instead_of_a_cut_code() -> None:
    app = _QrApp()
    async with app.run_test(size=(40, 16)) as pilot:
        await pilot.pause()
        widget = app.query_one(QrCode)
        assert not widget.fits
        svg = app.export_screenshot()
        assert UPPER_HALF not in svg
        assert "too&#160;small" in svg or "too small" in svg
        await pilot.resize_terminal(80, 24)
        assert widget.fits and widget.quiet_zone == 3  # 47 columns, 24 rows
        await pilot.resize_terminal(120, 40)
        assert widget.quiet_zone == 4


def test_a_swipe_shows_only_brand_and_masked_number() -> None:
    track = "%B5555555555554444^DOE/JANE^3012101000000000?;5555555555554444=3012101?"
    card = summarize(track)
    assert card is not None
    assert (card.brand, card.masked, card.last4) == ("Mastercard", "555555******4444", "4444")
    assert summarize(";378282246310005=30121010000?").brand == "Amex"  # type: ignore[union-attr]
    assert summarize("%B4111111111111112^X^3012?") is None  # fails Luhn
    assert summarize("hello") is None
    assert mask("4111111111111111") == "411111******1111"


def test_the_journal_survives_a_restart_and_a_torn_last_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry = journal.record_order(Entry("checkout", "key-1", amount_minor=1250, currency="EUR"))
    assert entry.order_id.endswith("-0001")
    journal.update("key-1", payment_id="pay_1")
    journal.record(Entry("refund", "key-2", payment_id="pay_0"))
    journal.finish("key-2")
    journal.set_cursor("000042")
    journal.close()
    log = tmp_path / "journal.log"
    raw = log.read_bytes()
    assert len(raw) % CHUNK == 0  # written into zero-filled space
    torn = b'{"op": "put", "entry": {"kind": "che'  # the power went out here
    end = raw.index(b"\0")
    log.write_bytes(raw[:end] + torn + raw[end + len(torn) :])
    again = Journal(tmp_path)
    (pending,) = again.pending()
    assert pending.payment_id == "pay_1" and pending.created_at == entry.created_at
    assert again.cursor == "000042"
    assert again.next_order_id().endswith("-0002")
    again.finish("key-1")
    again.close()
    third = Journal(tmp_path)  # compacted on start: one line for the order counter
    assert third.pending() == []
    assert log.read_bytes().split(b"\0")[0].count(b"\n") == 1
    third.close()


def test_the_journal_compacts_itself_when_its_space_runs_out(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    keep = journal.record(Entry("checkout", "keep", "A-1", 100, "EUR"))
    for i in range(2 * CHUNK // 150):
        journal.record(Entry("refund", f"r{i}", "A-2", 1, "EUR", description="x" * 20))
        journal.finish(f"r{i}")
    journal.close()
    assert (tmp_path / "journal.log").stat().st_size == CHUNK
    assert Journal(tmp_path).pending() == [keep]


async def test_retries_back_off_on_unavailable_only() -> None:
    attempts: list[str] = []

    async def flaky(attempt: int) -> str:
        attempts.append("x")
        if len(attempts) < 3:
            raise ClientError("UNAVAILABLE", "down", "UNAVAILABLE")
        return "ok"

    policy = RetryPolicy(attempts=4, initial_backoff=0.001, max_backoff=0.002)
    assert await with_retries(flaky, policy) == "ok"
    assert len(attempts) == 3

    async def refused(attempt: int) -> str:
        attempts.append("y")
        raise ClientError("PAYMENT_EXPIRED", "late", "FAILED_PRECONDITION")

    with pytest.raises(ClientError, match="PAYMENT_EXPIRED"):
        await with_retries(refused, policy)
    assert attempts.count("y") == 1
