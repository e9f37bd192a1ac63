"""The till against a real PSP on loopback: every screen, the QR read back from the till's own
screenshot by real decoders, the wallet paying while the till watches, crashes and outages."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from pos_terminal.app import PosApp
from pos_terminal.client import ClientError, GrpcPspClient, Payment, RetryPolicy
from pos_terminal.screens.card import CardScreen
from pos_terminal.screens.checkout import CheckoutScreen
from pos_terminal.screens.connect import ConnectScreen
from pos_terminal.screens.dialogs import ConfirmScreen
from pos_terminal.screens.end_of_day import EndOfDayScreen
from pos_terminal.screens.history import HistoryScreen
from pos_terminal.screens.payment import PaymentScreen
from pos_terminal.screens.sale import SaleScreen
from pos_terminal.screens.static_qr import StaticQrScreen
from pos_terminal.state import Backoff
from pos_terminal.testing import decode_qr, press_burst, settle, svg_to_png, type_burst, until
from pos_terminal.widgets.qr_code import QrCode
from pos_terminal.widgets.status import ConnectionStatus
from protos.scanpay.v1 import merchant_pb2
from tests.support.psp import LivePsp, MerchantCreds, bearer

EMAIL = "ann@example.com"
FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.05, max_backoff=0.1, reconnect_wait=0.3)


@pytest.fixture
def shop(live_psp: LivePsp) -> MerchantCreds:
    creds = live_psp.create_merchant()
    live_psp.create_consumer(EMAIL, balance_minor=500_00)
    return creds


@asynccontextmanager
async def live_till(
    psp: LivePsp,
    key: str,
    data_dir: Path,
    *,
    size: tuple[int, int] = (80, 24),
    client: GrpcPspClient | None = None,
    online: bool = True,
) -> AsyncIterator[tuple[PosApp, object]]:
    client = client or GrpcPspClient(psp.address, key, retry=FAST_RETRY)
    app = PosApp(client, data_dir, psp_address=psp.address, backoff=Backoff(0.05, 0.4))
    async with app.run_test(size=size) as pilot:
        if online:
            await until(pilot, lambda: app.online, what="the till online")
        yield app, pilot


async def checkout(app: PosApp, pilot, amount: str) -> CheckoutScreen:
    await type_burst(pilot, amount)
    await until(pilot, lambda: getattr(app.screen, "state", "") == "pending", what="the QR")
    screen = app.screen
    assert isinstance(screen, CheckoutScreen)
    return screen


def server_payments(psp: LivePsp, key: str, order_id: str) -> list:
    with psp.channel() as channel:
        from protos.scanpay.v1 import merchant_pb2_grpc

        stub = merchant_pb2_grpc.MerchantServiceStub(channel)
        response = stub.ListPayments(
            merchant_pb2.ListPaymentsRequest(order_id=order_id), metadata=bearer(key)
        )
    return list(response.payments)


async def pay(psp: LivePsp, payload: str, amount_minor: int | None = None) -> None:
    await asyncio.to_thread(psp.wallet_pay, EMAIL, payload=payload, amount_minor=amount_minor)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_the_qr_on_screen_decodes_to_the_psp_payload_and_turns_paid(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path, size: tuple[int, int]
) -> None:
    async with live_till(live_psp, shop.api_key, tmp_path, size=size) as (app, pilot):
        screen = await checkout(app, pilot, "12.50")
        (stored,) = server_payments(live_psp, shop.api_key, screen.payment.order_id)
        payload = stored.qr_payload
        assert screen.qr_payload == payload
        qr = screen.query_one(QrCode)
        assert qr.fits and qr.quiet_zone == (2 if size == (80, 24) else 4)
        svg = app.export_screenshot()
        png = svg_to_png(svg)
        (tmp_path / f"checkout-{size[0]}x{size[1]}.png").write_bytes(png)
        assert decode_qr(png) == {"zxing": [payload], "zbar": [payload]}
        if shutil.which("rsvg-convert"):
            assert decode_qr(svg_to_png(svg, renderer="rsvg"))["zxing"] == [payload]
        # Amount, merchant, order and countdown sit beside the code.
        for text in ("12.50 EUR", "Corner Bakery", screen.payment.order_id, "Expires in 1"):
            assert text.replace(" ", "&#160;") in svg or text in svg

        await pay(live_psp, payload)
        await until(pilot, lambda: screen.state == "final", what="PAID on screen")
        assert screen.banner_text == "✔ PAID  12.50 EUR"
        assert "PAID" in str(screen.query_one("#receipt").content)


class GatedClient(GrpcPspClient):
    """A till whose payment stream can be held off, like a network partition."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.gate.set()
        self.cursors: list[str] = []

    async def watch_payments(self, after_cursor: str = "", *, on_open=None):  # type: ignore[override]
        await self.gate.wait()
        self.cursors.append(after_cursor)
        async for event in super().watch_payments(after_cursor, on_open=on_open):
            yield event


async def test_a_payment_made_while_the_stream_was_down_appears_on_reconnect(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    client = GatedClient(live_psp.address, shop.api_key, retry=FAST_RETRY)
    async with live_till(live_psp, shop.api_key, tmp_path, client=client) as (app, pilot):
        screen = await checkout(app, pilot, "3.40")
        client.gate.clear()
        await asyncio.to_thread(live_psp.restart)  # the stream is cut
        await until(pilot, lambda: app.link == "offline", what="offline banner")
        assert screen.query_one(ConnectionStatus).offline
        await pay(live_psp, screen.qr_payload)  # paid while the till cannot hear
        await pilot.pause()
        assert screen.state == "pending"
        client.gate.set()
        await until(pilot, lambda: screen.state == "final", what="PAID after reconnect")
        assert "PAID" in screen.banner_text
        assert client.cursors[-1] != ""  # resumed from the saved cursor, not from scratch
        assert not screen.query_one(ConnectionStatus).offline


async def test_an_expired_qr_is_shown_as_expired(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with live_till(live_psp, shop.api_key, tmp_path) as (app, pilot):
        screen = await checkout(app, pilot, "2")
        payload = screen.qr_payload
        live_psp.clock.advance(timedelta(minutes=20))
        await until(pilot, lambda: screen.state == "final", what="EXPIRED", timeout=15)
        assert screen.banner_text.startswith("EXPIRED")
        with pytest.raises(grpc.RpcError):  # nobody can pay it any more
            await pay(live_psp, payload)


class LostAnswerClient(GrpcPspClient):
    """CreatePayment reaches the PSP, then the till dies before reading the answer."""

    def __init__(self, *args: object, journal_dir: Path, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.journal_dir = journal_dir
        self.keys_on_disk: list[bool] = []

    async def create_payment(self, **kwargs):  # type: ignore[override]
        on_disk = (self.journal_dir / "journal.log").read_text()
        self.keys_on_disk.append(kwargs["idempotency_key"] in on_disk)
        await super().create_payment(**kwargs)
        raise asyncio.CancelledError  # the request is killed mid-flight


async def test_a_crash_mid_checkout_resumes_the_same_qr_and_one_payment(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    dying = LostAnswerClient(live_psp.address, shop.api_key, journal_dir=tmp_path, retry=FAST_RETRY)
    async with live_till(live_psp, shop.api_key, tmp_path, client=dying) as (app, pilot):
        await type_burst(pilot, "21.00")
        await until(pilot, lambda: dying.keys_on_disk, what="the request")
        await settle(pilot)
        (entry,) = app.journal.pending("checkout")
    assert dying.keys_on_disk == [True]
    (first,) = server_payments(live_psp, shop.api_key, entry.order_id)

    async with live_till(live_psp, shop.api_key, tmp_path) as (app, pilot):
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="resume offer")
        await pilot.press("enter")
        await until(pilot, lambda: getattr(app.screen, "state", "") == "pending", what="QR")
        screen = app.screen
        assert screen.payment.id == first.id
        assert screen.qr_payload == first.qr_payload
        await pay(live_psp, screen.qr_payload)
        await until(pilot, lambda: screen.state == "final", what="PAID")
    assert len(server_payments(live_psp, shop.api_key, entry.order_id)) == 1


async def test_psp_down_mid_sale_then_back_charges_once(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with live_till(live_psp, shop.api_key, tmp_path) as (app, pilot):
        await asyncio.to_thread(live_psp.stop)
        await type_burst(pilot, "6.60")
        await until(pilot, lambda: getattr(app.screen, "state", "") == "failed", what="failed")
        screen = app.screen
        assert "Cannot reach the PSP" in screen.status_text
        await until(pilot, lambda: app.link == "offline", what="offline banner")
        await asyncio.to_thread(live_psp.start)
        await until(pilot, lambda: app.online, what="the banner gone")
        await pilot.press("enter")  # try again: same order, same key
        await until(pilot, lambda: screen.state == "pending", what="the QR")
        await pay(live_psp, screen.qr_payload)
        await until(pilot, lambda: screen.state == "final", what="PAID")
        order_id = screen.payment.order_id
    assert len(server_payments(live_psp, shop.api_key, order_id)) == 1


async def test_a_wrong_key_and_an_unreachable_psp_are_clear_messages(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with live_till(live_psp, "not-a-key", tmp_path / "a", online=False) as (app, pilot):
        await until(pilot, lambda: "rejected" in app.screen.message, what="key refused")
        assert "INVALID_API_KEY" in app.screen.message
    await asyncio.to_thread(live_psp.stop)
    async with live_till(live_psp, shop.api_key, tmp_path / "b", online=False) as (app, pilot):
        await until(pilot, lambda: "Cannot reach" in app.screen.message, what="unreachable")
        assert isinstance(app.screen, ConnectScreen)
        assert live_psp.address in app.screen.message
        await asyncio.to_thread(live_psp.start)
        await until(pilot, lambda: app.online, what="connected once the PSP is back")
        assert isinstance(app.screen, SaleScreen)


async def test_history_refunds_partly_then_fully_and_void_is_not_available_yet(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with live_till(live_psp, shop.api_key, tmp_path) as (app, pilot):
        screen = await checkout(app, pilot, "10")
        await pay(live_psp, screen.qr_payload)
        await until(pilot, lambda: screen.state == "final", what="PAID")
        payment_id = screen.payment.id
        await pilot.press("enter", "f3")
        await settle(pilot)
        history = app.screen
        assert isinstance(history, HistoryScreen)
        assert payment_id in history.rows
        await pilot.press("enter", "r")
        await press_burst(pilot, *["backspace"] * 6)
        await type_burst(pilot, "2.50", enter=False)
        await pilot.press("enter", "enter")
        await settle(pilot)
        detail = app.screen
        assert isinstance(detail, PaymentScreen)
        assert "Refunded 2.50 EUR" in detail.message, detail.message
        await pilot.press("r", "enter", "enter")  # the remaining 7.50
        await settle(pilot)
        assert "Refunded 7.50 EUR" in detail.message
        await until(pilot, lambda: history.rows[payment_id].status.value == "refunded")
        # Void needs the card rail: the PSP says UNIMPLEMENTED and the till says so.
        with pytest.raises(ClientError) as refused:
            await app.client.void_payment(payment_id, idempotency_key="void-1")
        assert refused.value.unimplemented
        assert detail.check_action("void", ()) is False  # not a card payment: not offered
    ((stored),) = [p for p in server_payments(live_psp, shop.api_key, screen.payment.order_id)]
    assert stored.refunded.amount_minor == 1000


async def test_static_qr_from_the_psp_decodes_on_screen_and_on_paper(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with live_till(live_psp, shop.api_key, tmp_path) as (app, pilot):
        await pilot.press("f4")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, StaticQrScreen)
        payload = live_psp.static_qr(shop.api_key)
        assert decode_qr(svg_to_png(app.export_screenshot()))["zxing"] == [payload]
        await pilot.press("s")
        await settle(pilot)
        assert decode_qr((tmp_path / "static-qr.png").read_bytes())["zbar"] == [payload]
        assert (tmp_path / "static-qr.pdf").read_bytes().startswith(b"%PDF")
        # A customer pays the static QR with an amount of their own; history shows it live.
        await pilot.press("escape", "f3")
        await settle(pilot)
        await pay(live_psp, payload, amount_minor=4_20)
        history = app.screen
        await until(pilot, lambda: len(history.rows) == 1, what="static payment in history")
        (row,) = history.rows.values()
        assert isinstance(row, Payment) and row.amount.amount_minor == 4_20


async def test_end_of_day_totals_and_batch_close_not_available_yet(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with live_till(live_psp, shop.api_key, tmp_path) as (app, pilot):
        screen = await checkout(app, pilot, "40")
        await pay(live_psp, screen.qr_payload)
        await until(pilot, lambda: screen.state == "final", what="PAID")
        await pilot.press("enter", "f5")
        await settle(pilot)
        day = app.screen
        assert isinstance(day, EndOfDayScreen)
        assert "QR (1)" in day.summary_text and "40.00 EUR" in day.summary_text
        assert day.summary.net.amount_minor == 40_00 - day.summary.fees.amount_minor
        await pilot.press("b", "enter")
        await settle(pilot)
        assert "Card batch close is not available yet" in day.message


async def test_a_card_swipe_is_masked_and_the_psp_has_no_card_rail_yet(
    live_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    swipe = "%B4111111111111111^DOE/JANE^3012101000000000?;4111111111111111=30121010000?"
    async with live_till(live_psp, shop.api_key, tmp_path) as (app, pilot):
        await type_burst(pilot, "9", enter=False)
        await pilot.press("f2")
        await type_burst(pilot, swipe)
        await settle(pilot)
        card = app.screen
        assert isinstance(card, CardScreen)
        assert card.card_text == "Visa  411111******1111"
        assert card.status_text == "Card payments are not available yet."
        assert "4111111111111111" not in app.export_screenshot()
