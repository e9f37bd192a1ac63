"""History, refunds, void, static QR, end of day and start-up, against the fake PSP."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from PIL import Image

from pos_terminal import config
from pos_terminal.__main__ import main
from pos_terminal.app import PosApp
from pos_terminal.client import Merchant, PaymentStatus
from pos_terminal.screens.connect import ConnectScreen
from pos_terminal.screens.dialogs import AmountScreen, ConfirmScreen
from pos_terminal.screens.end_of_day import EndOfDayScreen
from pos_terminal.screens.history import HistoryScreen
from pos_terminal.screens.payment import PaymentScreen
from pos_terminal.screens.sale import SaleScreen
from pos_terminal.screens.static_qr import StaticQrScreen
from pos_terminal.state import Backoff
from pos_terminal.testing import decode_qr, press_burst, settle, type_burst, until
from pos_terminal.widgets.qr_code import QrCode
from psp_server.domain.money import Money
from tests.fakes import UNAVAILABLE, FakePspClient


@asynccontextmanager
async def till(
    fake: FakePspClient, data_dir: Path, *, online: bool = True, **kwargs: object
) -> AsyncIterator[tuple[PosApp, object]]:
    app = PosApp(fake, data_dir, backoff=Backoff(initial=0.01, maximum=0.05), **kwargs)
    async with app.run_test(size=(80, 24)) as pilot:
        if online:
            await until(pilot, lambda: app.online, what="the till to come online")
        yield app, pilot


async def paid_payment(fake: FakePspClient, amount_minor: int, order_id: str):
    payment = await fake.create_payment(
        order_id=order_id,
        amount=Money(amount_minor, "EUR"),
        description="",
        idempotency_key=f"k-{order_id}",
    )
    return await fake.pay(payment.id)


@pytest.fixture
def fake() -> FakePspClient:
    return FakePspClient()


async def test_history_lists_today_and_follows_the_stream(
    fake: FakePspClient, tmp_path: Path
) -> None:
    await paid_payment(fake, 1000, "A-1")
    async with till(fake, tmp_path) as (app, pilot):
        await pilot.press("f3")
        await settle(pilot)
        history = app.screen
        assert isinstance(history, HistoryScreen)
        assert len(history.rows) == 1
        later = await paid_payment(fake, 250, "A-2")
        await until(pilot, lambda: later.id in history.rows, what="live row")
        assert history.selected_id == next(iter(history.rows))  # cursor stays put
        assert history.rows[later.id].status == PaymentStatus.SUCCEEDED
        await pilot.press("escape")
        assert isinstance(app.screen, SaleScreen)


async def test_partial_then_full_refund_with_confirmation(
    fake: FakePspClient, tmp_path: Path
) -> None:
    payment = await paid_payment(fake, 1000, "A-1")
    async with till(fake, tmp_path) as (app, pilot):
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, PaymentScreen)
        await pilot.press("r")
        prompt = app.screen
        assert isinstance(prompt, AmountScreen)
        assert prompt.query_one("#amount").value == "10.00"
        await press_burst(pilot, *["backspace"] * 5)
        await type_burst(pilot, "4", enter=False)
        await pilot.press("enter")
        confirm = app.screen
        assert isinstance(confirm, ConfirmScreen)
        assert "Refund 4.00 EUR (a partial refund)" in confirm.question
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is detail
        assert "Refunded 4.00 EUR" in detail.message
        assert fake.payments[payment.id].status == PaymentStatus.PARTIALLY_REFUNDED
        await pilot.press("r", "enter")  # the rest, prefilled
        assert "(the full amount)" in app.screen.question
        await pilot.press("enter")
        await settle(pilot)
        assert fake.payments[payment.id].status == PaymentStatus.REFUNDED
        assert detail.check_action("refund", ()) is None  # nothing left: shown disabled
        await pilot.press("escape")
        history = app.screen
        assert isinstance(history, HistoryScreen)
        await until(pilot, lambda: history.rows[payment.id].status == PaymentStatus.REFUNDED)
        assert app.journal.pending() == []


async def test_refund_more_than_left_is_refused_in_the_dialog(
    fake: FakePspClient, tmp_path: Path
) -> None:
    await paid_payment(fake, 500, "A-1")
    async with till(fake, tmp_path) as (app, pilot):
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("enter", "r")
        prompt = app.screen
        assert isinstance(prompt, AmountScreen)
        error = prompt.query_one("#error")
        await type_burst(pilot, "6", enter=False)  # replaces the selected default
        await pilot.press("enter")
        assert "At most 5.00 EUR" in str(error.content)
        for typed, why in (("0", "above zero"), ("1.234", "decimal places")):
            await press_burst(pilot, *["backspace"] * 6)
            await type_burst(pilot, typed, enter=False)
            await pilot.press("enter")
            assert why in str(error.content)
        await pilot.press("escape")
        assert isinstance(app.screen, PaymentScreen)
        assert fake.count("refund_payment") == 0


async def test_a_refund_that_did_not_get_through_is_resent_with_the_same_key(
    fake: FakePspClient, tmp_path: Path
) -> None:
    payment = await paid_payment(fake, 800, "A-1")
    async with till(fake, tmp_path) as (app, pilot):
        fake.fail_next("refund_payment", UNAVAILABLE)
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("enter", "r", "enter", "enter")
        await settle(pilot)
        assert "the refund is kept" in app.screen.message
        assert len(app.journal.pending("refund")) == 1
        await pilot.press("r", "enter", "enter")
        await settle(pilot)
        assert "Refunded 8.00 EUR" in app.screen.message
        assert app.journal.pending() == []
    keys = {c.kwargs["key"] for c in fake.calls if c.method == "refund_payment"}
    assert len(keys) == 1
    assert len(fake.payments[payment.id].refunds) == 1


async def test_a_refund_whose_answer_was_lost_is_offered_again_after_a_restart(
    fake: FakePspClient, tmp_path: Path
) -> None:
    payment = await paid_payment(fake, 800, "A-1")
    async with till(fake, tmp_path) as (app, pilot):
        fake.lose_next("refund_payment")
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("enter", "r", "enter", "enter")
        await settle(pilot)
    async with till(fake, tmp_path) as (app, pilot):
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the offer")
        assert "A refund of 8.00 EUR for order A-1 was interrupted" in app.screen.question
        await pilot.press("enter")
        await settle(pilot)
        assert app.journal.pending() == []
    assert fake.count("refund_payment") == 2
    assert len(fake.payments[payment.id].refunds) == 1


async def test_void_is_offered_for_card_payments_only_and_not_available_yet(
    fake: FakePspClient, tmp_path: Path
) -> None:
    qr = await paid_payment(fake, 300, "A-1")
    card = fake.add_card_payment(Money(1500, "EUR"))
    async with till(fake, tmp_path) as (app, pilot):
        await pilot.press("f3")
        await settle(pilot)
        history = app.screen
        assert isinstance(history, HistoryScreen)
        table = history.query_one("DataTable")
        for payment_id, voidable in ((qr.id, False), (card.id, True)):
            table.move_cursor(row=table.get_row_index(payment_id))
            await pilot.press("enter")
            detail = app.screen
            assert isinstance(detail, PaymentScreen) and detail.payment_id == payment_id
            assert ("v" in detail.active_bindings) is voidable
            if voidable:
                await pilot.press("v")
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("enter")
                await settle(pilot)
                assert detail.message == (
                    "Card payments are not available yet. Nothing was voided."
                )
            await pilot.press("escape")
        assert fake.count("void_payment") == 1
        assert app.journal.pending() == []


async def test_static_qr_is_shown_and_saved_as_png_and_pdf(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await pilot.press("f4")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, StaticQrScreen)
        payload = (await fake.get_static_qr()).qr_payload
        assert screen.query_one(QrCode).payload == payload
        await pilot.press("s")
        await settle(pilot)
        png = tmp_path / "static-qr.png"
        pdf = tmp_path / "static-qr.pdf"
        assert str(png) in screen.message
        assert pdf.read_bytes().startswith(b"%PDF")
        assert decode_qr(png.read_bytes())["zxing"] == [payload]
        with Image.open(io.BytesIO(png.read_bytes())) as image:
            assert image.height > image.width  # the caption sits under the code
        await pilot.press("escape")
        assert isinstance(app.screen, SaleScreen)


async def test_end_of_day_totals_and_the_batch_close_is_not_available_yet(
    fake: FakePspClient, tmp_path: Path
) -> None:
    await paid_payment(fake, 1000, "A-1")
    await paid_payment(fake, 2000, "A-2")
    async with till(fake, tmp_path) as (app, pilot):
        await pilot.press("f5")
        await settle(pilot)
        day = app.screen
        assert isinstance(day, EndOfDayScreen)
        text = day.summary_text
        assert "QR (2)" in text and "30.00 EUR" in text
        assert "Fees" in text and "-0.45 EUR" in text
        assert "29.55 EUR" in text  # net
        await pilot.press("b")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("enter")
        await settle(pilot)
        assert "Card batch close is not available yet" in day.message
        assert app.journal.pending() == []


async def test_a_wrong_key_is_a_clear_message(fake: FakePspClient, tmp_path: Path) -> None:
    fake.wrong_key = True
    async with till(fake, tmp_path, online=False, psp_address="127.0.0.1:1") as (app, pilot):
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ConnectScreen)
        assert "rejected this till's API key (INVALID_API_KEY)" in screen.message
        assert app.merchant is None


async def test_psp_down_at_start_then_up(fake: FakePspClient, tmp_path: Path) -> None:
    fake.down = True
    saved: list[Merchant] = []
    async with till(fake, tmp_path, online=False, on_connected=saved.append) as (app, pilot):
        await until(pilot, lambda: fake.count("get_merchant") >= 2, what="a retry")
        assert isinstance(app.screen, ConnectScreen)
        assert "Cannot reach the PSP" in app.screen.message
        fake.go_up()
        await until(pilot, lambda: app.online, what="connected")
        assert isinstance(app.screen, SaleScreen)
        assert saved == [fake.merchant]


def test_the_command_line_needs_a_key_and_resolves_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCANPAY_TILL_KEY", raising=False)
    monkeypatch.delenv("SCANPAY_PSP", raising=False)
    assert main(["--data", str(tmp_path)]) == 2
    assert "no API key" in capsys.readouterr().err
    config.save(config.TillConfig(psp="10.0.0.5:7000", key="saved", data_dir=tmp_path))
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o600
    assert config.resolve(None, None, tmp_path) == ("10.0.0.5:7000", "saved", tmp_path)
    monkeypatch.setenv("SCANPAY_TILL_KEY", "from-env")
    assert config.resolve(None, None, tmp_path)[1] == "from-env"
    assert config.resolve("h:1", "flag", tmp_path)[:2] == ("h:1", "flag")
    monkeypatch.setenv("SCANPAY_DATA", str(tmp_path / "d"))
    assert config.default_data_dir() == tmp_path / "d" / "till"
