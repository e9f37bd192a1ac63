"""The till against the fake PSP: sale, QR checkout, journal, stream, card (Pilot, 80x24)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from pos_terminal.app import PosApp
from pos_terminal.client import PaymentStatus
from pos_terminal.screens.card import CardScreen
from pos_terminal.screens.checkout import CheckoutScreen
from pos_terminal.screens.dialogs import ConfirmScreen
from pos_terminal.screens.sale import SaleScreen
from pos_terminal.state import Backoff
from pos_terminal.testing import settle, type_burst, until
from pos_terminal.widgets.inputs import AmountInput
from pos_terminal.widgets.qr_code import QrCode
from pos_terminal.widgets.status import ConnectionStatus
from psp_server.domain.money import Money
from tests.fakes import UNAVAILABLE, FakePspClient

VISA_SWIPE = (
    "%B4111111111111111^DOE/JANE^3012101000000000000000?;4111111111111111=30121010000000000000?"
)


@asynccontextmanager
async def till(
    fake: FakePspClient, data_dir: Path, size: tuple[int, int] = (80, 24)
) -> AsyncIterator[tuple[PosApp, object]]:
    app = PosApp(fake, data_dir, backoff=Backoff(initial=0.01, maximum=0.05))
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.online, what="the till to come online")
        yield app, pilot


def screen_text(app: PosApp) -> str:
    """Everything on screen, as text (what a cashier, or a camera, could read)."""
    return app.export_screenshot()


@pytest.fixture
def fake() -> FakePspClient:
    return FakePspClient()


async def test_sale_starts_in_the_amount_field_with_every_binding_in_the_footer(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, _pilot):
        assert isinstance(app.screen, SaleScreen)
        assert isinstance(app.focused, AmountInput)
        keys = set(app.screen.active_bindings)
        assert {"enter", "f2", "f3", "f4", "f5", "escape", "plus"} <= keys
        svg = screen_text(app)
        for label in ("Charge QR", "Card", "History", "Static QR", "End of day", "Add item"):
            assert label.replace(" ", "&#160;") in svg or label in svg


async def test_line_items_add_up_and_enter_charges_the_total(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await type_burst(pilot, "2.50", enter=False)
        await pilot.press("tab")
        await type_burst(pilot, "Bread", enter=False)
        await pilot.press("shift+tab")
        await type_burst(pilot, "+1,20+3", enter=False)
        sale = app.screen
        assert isinstance(sale, SaleScreen)
        assert len(sale.items) == 2
        assert "6.70 EUR" in str(sale.query_one("#total").content)
        await pilot.press("enter")
        await settle(pilot)
        checkout = app.screen
        assert isinstance(checkout, CheckoutScreen)
        assert checkout.state == "pending"
        (payment,) = fake.payments.values()
        assert payment.amount == Money(670, "EUR")
        assert payment.description == "Bread 2.50; Item 2 1.20; Item 3 3.00"
        assert checkout.qr_payload == payment.qr_payload
        assert checkout.query_one(QrCode).fits


async def test_a_malformed_or_missing_amount_is_refused_on_screen(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await pilot.press("enter")
        assert "Type an amount first" in str(app.screen.query_one("#message").content)
        await type_burst(pilot, "1.234")
        assert "Not a valid amount" in str(app.screen.query_one("#message").content)
        assert isinstance(app.screen, SaleScreen)
        assert fake.count("create_payment") == 0


async def test_paid_turns_the_screen_into_a_receipt_and_closes_the_journal(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await type_burst(pilot, "12.50")
        await settle(pilot)
        checkout = app.screen
        assert isinstance(checkout, CheckoutScreen)
        assert app.journal.pending("checkout")
        await fake.pay(checkout.payment.id)
        await until(pilot, lambda: checkout.state == "final", what="PAID")
        assert checkout.banner_text == "✔ PAID  12.50 EUR"
        assert not checkout.query_one("#checkout").display
        receipt = str(checkout.query_one("#receipt").content)
        assert "Corner Bakery" in receipt and checkout.payment.order_id in receipt
        await settle(pilot)
        assert app.journal.pending() == []
        await pilot.press("enter")
        sale = app.screen
        assert isinstance(sale, SaleScreen)
        assert sale.query_one(AmountInput).value == ""
        assert "PAID" in str(sale.query_one("#message").content)


@pytest.mark.parametrize("outcome", ["expired", "canceled_by_cashier", "paid_before_cancel"])
async def test_expired_and_canceled_are_shown_as_such(
    fake: FakePspClient, tmp_path: Path, outcome: str
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await type_burst(pilot, "4")
        await settle(pilot)
        checkout = app.screen
        assert isinstance(checkout, CheckoutScreen)
        payment_id = checkout.payment.id
        if outcome == "expired":
            await fake.expire(payment_id)
            expected = "EXPIRED"
        else:
            if outcome == "paid_before_cancel":
                await fake.pay(payment_id, emit=False)  # the stream has not told us yet
            await pilot.press("escape")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("enter")
            await settle(pilot)
            expected = "PAID" if outcome == "paid_before_cancel" else "CANCELED"
        await until(pilot, lambda: checkout.state == "final", what=expected)
        assert expected in checkout.banner_text
        final = {
            "EXPIRED": PaymentStatus.EXPIRED,
            "CANCELED": PaymentStatus.CANCELED,
            "PAID": PaymentStatus.SUCCEEDED,
        }
        assert fake.payments[payment_id].status == final[expected]


async def test_esc_then_no_keeps_the_payment_open(fake: FakePspClient, tmp_path: Path) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await type_burst(pilot, "4")
        await settle(pilot)
        checkout = app.screen
        await pilot.press("escape", "escape")
        assert app.screen is checkout
        assert checkout.state == "pending"
        assert fake.count("cancel_payment") == 0


async def test_the_idempotency_key_is_on_disk_before_the_request_leaves(
    fake: FakePspClient, tmp_path: Path
) -> None:
    seen: list[bool] = []

    def check(method: str, kwargs: dict[str, object]) -> None:
        if method == "create_payment":
            lines = (tmp_path / "journal.log").read_text().splitlines()
            keys = {
                json.loads(line)["entry"]["idempotency_key"] for line in lines if "entry" in line
            }
            seen.append(kwargs["key"] in keys)

    fake.on_call = check
    async with till(fake, tmp_path) as (_app, pilot):
        await type_burst(pilot, "9.99")
        await settle(pilot)
    assert seen == [True]


async def test_psp_down_mid_sale_then_retry_gives_the_same_payment(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        fake.lose_next("create_payment")  # the PSP made it, the answer never came back
        await type_burst(pilot, "7.30")
        await settle(pilot)
        checkout = app.screen
        assert isinstance(checkout, CheckoutScreen)
        assert checkout.state == "failed"
        assert "Cannot reach the PSP" in checkout.status_text
        assert {b.binding.description for b in checkout.active_bindings.values()} >= {
            "Try again",
            "Abandon order",
        }
        await pilot.press("enter")
        await settle(pilot)
        assert checkout.state == "pending"
        assert len(fake.payments) == 1
        (payment,) = fake.payments.values()
        assert checkout.qr_payload == payment.qr_payload
        keys = [c.kwargs["key"] for c in fake.calls if c.method == "create_payment"]
        assert len(keys) == 2 and keys[0] == keys[1]


async def test_a_crash_mid_checkout_is_offered_on_restart_and_never_doubles(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        fake.lose_next("create_payment")
        await type_burst(pilot, "15")
        await settle(pilot)
        assert app.screen.state == "failed"
    # The till died here. It starts again on the same data directory.
    async with till(fake, tmp_path) as (app, pilot):
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="resume offer")
        assert "unfinished checkout" in str(app.screen.query_one("#question").content)
        await pilot.press("enter")
        await until(
            pilot,
            lambda: isinstance(app.screen, CheckoutScreen) and app.screen.state == "pending",
            what="the same QR",
        )
        (payment,) = fake.payments.values()
        assert app.screen.qr_payload == payment.qr_payload
        await fake.pay(payment.id)
        await until(pilot, lambda: app.screen.state == "final", what="PAID")
        await settle(pilot)
        assert app.journal.pending() == []
    assert len(fake.payments) == 1


async def test_a_declined_resume_cancels_the_orphan_payment(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        fake.lose_next("create_payment")
        await type_burst(pilot, "15")
        await settle(pilot)
    async with till(fake, tmp_path) as (app, pilot):
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="resume offer")
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, SaleScreen)
        assert app.journal.pending() == []
    (payment,) = fake.payments.values()
    assert payment.status == PaymentStatus.CANCELED


async def test_abandoning_a_checkout_in_flight_never_resurrects_it(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        fake.hold("create_payment")
        await type_burst(pilot, "5")
        await until(pilot, lambda: fake.count("create_payment") == 1, what="request sent")
        checkout = app.screen
        assert isinstance(checkout, CheckoutScreen) and checkout.state == "creating"
        await pilot.press("escape")
        await pilot.press("enter")  # yes, abandon
        assert isinstance(app.screen, SaleScreen)
        fake.release("create_payment")
        await settle(pilot)
        assert isinstance(app.screen, SaleScreen)
        assert checkout.payment is None  # the late answer was not applied
        assert app.journal.pending() == []
    (payment,) = fake.payments.values()
    assert payment.status == PaymentStatus.CANCELED


async def test_offline_banner_and_a_payment_made_meanwhile_shows_on_reconnect(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await type_burst(pilot, "3.20")
        await settle(pilot)
        checkout = app.screen
        assert isinstance(checkout, CheckoutScreen)
        await fake.go_down()
        await until(pilot, lambda: app.link == "offline", what="offline")
        status = checkout.query_one(ConnectionStatus)
        assert status.offline
        assert "offline, reconnecting" in str(status.content)
        await fake.pay(checkout.payment.id)  # paid while the till cannot hear
        assert checkout.state == "pending"
        cursor_before = app.journal.cursor
        fake.go_up()
        await until(pilot, lambda: checkout.state == "final", what="PAID after reconnect")
        assert "PAID" in checkout.banner_text
        assert not status.offline
        resumed = [c for c in fake.calls if c.method == "watch_payments"][-1]
        assert resumed.kwargs["after_cursor"] == cursor_before != ""


async def test_the_cursor_survives_a_restart(fake: FakePspClient, tmp_path: Path) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await type_burst(pilot, "1")
        await settle(pilot)
        await until(pilot, lambda: app.events_seen >= 1, what="the created event")
    async with till(fake, tmp_path) as (app, pilot):
        last = [c for c in fake.calls if c.method == "watch_payments"][-1]
        assert last.kwargs["after_cursor"] == fake.events[-1].cursor


async def test_card_swipe_is_masked_never_echoed_and_not_available_yet(
    fake: FakePspClient, tmp_path: Path
) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await type_burst(pilot, "8.40", enter=False)
        await pilot.press("f2")
        card = app.screen
        assert isinstance(card, CardScreen)
        await type_burst(pilot, VISA_SWIPE[:30], enter=False)
        assert "4111111111111111" not in screen_text(app)
        assert "reading card" in str(card.query_one("#swipe").render())
        await type_burst(pilot, VISA_SWIPE[30:])
        await settle(pilot)
        assert card.card_text == "Visa  411111******1111"
        assert card.status_text == "Card payments are not available yet."
        svg = screen_text(app)
        assert "4111111111111111" not in svg and "DOE/JANE" not in svg
        assert fake.count("swipe_card") == 1
        await pilot.press("escape")
        assert isinstance(app.screen, SaleScreen)
    on_disk = "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert "4111111111111111" not in on_disk and "DOE" not in on_disk


async def test_card_approved_and_declined_with_the_reason(tmp_path: Path) -> None:
    fake = FakePspClient(card_rail=True)
    async with till(fake, tmp_path) as (app, pilot):
        await type_burst(pilot, "20", enter=False)
        await pilot.press("f2")
        await type_burst(pilot, VISA_SWIPE)
        await settle(pilot)
        card = app.screen
        assert isinstance(card, CardScreen)
        assert card.status_text.startswith("APPROVED  20.00 EUR")
        await pilot.press("escape")
        assert "PAID" in str(app.screen.query_one("#message").content)
        declined = VISA_SWIPE.replace("4111111111111111", "4000000000000002")
        await pilot.press("5", "f2")
        await type_burst(pilot, declined)
        await settle(pilot)
        assert app.screen.status_text == "DECLINED: Do not honor (05)"
        assert app.screen.card_text == "Visa  400000******0002"


async def test_an_unreadable_swipe_asks_for_another(fake: FakePspClient, tmp_path: Path) -> None:
    async with till(fake, tmp_path) as (app, pilot):
        await pilot.press("5", "f2")
        await type_burst(pilot, "%B41111^X^?")
        assert "Swipe it again" in app.screen.status_text
        assert fake.count("swipe_card") == 0


async def test_the_card_rail_down_keeps_the_key_for_the_next_swipe(tmp_path: Path) -> None:
    fake = FakePspClient(card_rail=True)
    async with till(fake, tmp_path) as (app, pilot):
        fake.fail_next("swipe_card", UNAVAILABLE)
        await pilot.press("5", "f2")
        await type_burst(pilot, VISA_SWIPE)
        await settle(pilot)
        assert "Swipe again to retry" in app.screen.status_text
        await type_burst(pilot, VISA_SWIPE)
        await settle(pilot)
        assert app.screen.status_text.startswith("APPROVED")
        orders = [c.kwargs["order_id"] for c in fake.calls if c.method == "swipe_card"]
        assert len(orders) == 2 and orders[0] == orders[1]
