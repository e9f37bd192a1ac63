"""The till's card screen end to end: Pilot drives the real Textual till, a keyboard-wedge
reader is played as a burst of keystrokes, and the till talks gRPC to a real PSP whose card
rail reaches the real ISO 8583 simulator process (``scanpay cardnet serve``) over TCP.

Approved, every decline with its reason, the no-answer card (reversed, nothing charged),
void and refund from History, the batch close on the end-of-day screen. After every test
the till's data directory (journal, config, a DEBUG log of the whole run) is searched for
the full card numbers and the track data."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from pos_terminal import config
from pos_terminal.app import PosApp
from pos_terminal.client import GrpcPspClient, RetryPolicy
from pos_terminal.screens.card import NOT_CHARGED, CardScreen
from pos_terminal.screens.dialogs import AmountScreen, ConfirmScreen
from pos_terminal.screens.end_of_day import EndOfDayScreen
from pos_terminal.screens.history import HistoryScreen
from pos_terminal.screens.payment import PaymentScreen
from pos_terminal.screens.sale import SaleScreen
from pos_terminal.state import Backoff
from pos_terminal.testing import press_burst, settle, type_burst, until
from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import merchant_pb2_grpc
from psp_server.config import Settings
from tests.support.cardnet import CardnetProcess
from tests.support.psp import LivePsp, MerchantCreds, bearer

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.05, max_backoff=0.1, reconnect_wait=0.3)
NO_ANSWER = "4000000000000119"
#: card -> (response code, what the cashier reads)
DECLINES = {
    "4000000000000002": ("05", "Do not honor"),
    "4000000000009995": ("51", "Insufficient funds"),
    "4000000000000069": ("54", "Card expired"),
    "4000000000009987": ("41", "Card reported lost"),
    "4000000000009979": ("43", "Card reported stolen"),
}
SWIPED: set[str] = {"4111111111111111", "5555555555554444", NO_ANSWER, *DECLINES}


def track(pan: str) -> str:
    """What a keyboard-wedge reader types for the card (Enter is typed separately)."""
    return f"%B{pan}^DOE/JANE^3012101000000000000?;{pan}=30121010000000000000?"


def card_secrets() -> list[bytes]:
    out: list[str] = ["DOE/JANE"]
    for pan in SWIPED:
        out += [pan, track(pan), f"{pan}=3012", f"{pan}^DOE"]
    return [s.encode() for s in out]


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def card_psp(
    cardnet: CardnetProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePsp]:
    data = tmp_path_factory.mktemp("psp-till-cards")
    settings = Settings(
        data_dir=data,
        cardnet_timeout=1.0,  # the no-answer card costs one second, not five
        reversal_interval=0.2,
        settlement_dir=cardnet.settlement_dir,
    )
    psp = LivePsp(data, settings=settings, cardnet=cardnet.address).start()
    try:
        yield psp
        assert psp.app.admin.ledger_check() == []
    finally:
        psp.stop()


@pytest.fixture
def shop(card_psp: LivePsp) -> MerchantCreds:
    return card_psp.create_merchant(discount_rate_bps=100)


@asynccontextmanager
async def card_till(
    psp: LivePsp, creds: MerchantCreds, data_dir: Path
) -> AsyncIterator[tuple[PosApp, Any]]:
    """A till on ``data_dir`` that writes its config there and logs everything (DEBUG) to
    ``debug.log`` there; when it has stopped, no file in the directory may hold card data."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(data_dir / "debug.log")
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)

    def remember_config(_merchant: object) -> None:
        config.save(config.TillConfig(psp=psp.address, key=creds.api_key, data_dir=data_dir))

    client = GrpcPspClient(psp.address, creds.api_key, retry=FAST_RETRY)
    app = PosApp(
        client,
        data_dir,
        psp_address=psp.address,
        on_connected=remember_config,
        backoff=Backoff(0.05, 0.4),
    )
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.online, what="the till online")
            yield app, pilot
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert {"journal.log", "config.json", "debug.log"} <= {p.name for p in files}
    assert (data_dir / "debug.log").stat().st_size > 0
    for f in files:
        blob = f.read_bytes()
        for secret in card_secrets():
            assert secret not in blob, f"{f.name} holds card data"


async def swipe(app: PosApp, pilot: Any, amount: str, pan: str) -> CardScreen:
    """Ring up ``amount``, F2, and play the reader's burst for ``pan``."""
    assert isinstance(app.screen, SaleScreen)
    await type_burst(pilot, amount, enter=False)
    await pilot.press("f2")
    screen = app.screen
    assert isinstance(screen, CardScreen)
    await type_burst(pilot, track(pan))
    return screen


async def answered(pilot: Any, screen: CardScreen, timeout: float = 10.0) -> None:
    await until(pilot, lambda: screen.state not in ("waiting", "sending"), timeout=timeout)


def server_payments(psp: LivePsp, key: str, order_id: str) -> list[c.Payment]:
    with psp.channel() as channel:
        stub = merchant_pb2_grpc.MerchantServiceStub(channel)
        response = stub.ListPayments(m.ListPaymentsRequest(order_id=order_id), metadata=bearer(key))
    return list(response.payments)


def balances(psp: LivePsp, merchant_id: str) -> dict[str, int]:
    """The merchant's ledger accounts that hold anything."""
    from sqlalchemy import select

    from psp_server.adapters import tables as t

    def q(store: Any) -> dict[str, int]:
        a = t.accounts.c
        rows = store.conn.execute(
            select(a.type, a.balance_minor).where(a.owner_id == merchant_id)
        ).all()
        return {r.type: int(r.balance_minor) for r in rows if r.balance_minor}

    out: dict[str, int] = psp.app.db.read_sync(q)
    return out


def order_of(screen: CardScreen) -> str:
    assert screen.payment is not None
    return screen.payment.order_id


async def open_in_history(app: PosApp, pilot: Any, payment_id: str) -> PaymentScreen:
    await pilot.press("escape", "f3")  # the card screen, then History
    await settle(pilot)
    history = app.screen
    assert isinstance(history, HistoryScreen)
    await until(pilot, lambda: payment_id in history.rows, what="the payment in History")
    assert history.selected_id == payment_id
    await pilot.press("enter")
    detail = app.screen
    assert isinstance(detail, PaymentScreen) and detail.payment_id == payment_id
    return detail


# -- the swipe --------------------------------------------------------------------------


async def test_approved_shows_brand_masked_card_authorizing_then_the_auth_code(
    card_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with card_till(card_psp, shop, tmp_path / "till") as (app, pilot):
        screen = await swipe(app, pilot, "12.50", "4111111111111111")
        await answered(pilot, screen)
        assert screen.state == "approved", screen.status_text
        assert screen.card_text == "Visa  411111******1111"
        (stored,) = server_payments(card_psp, shop.api_key, order_of(screen))
        assert stored.status == c.PAYMENT_STATUS_SUCCEEDED
        assert stored.card.auth_code
        assert screen.shown == [
            "Authorizing…",
            f"APPROVED  12.50 EUR  auth {stored.card.auth_code}",
        ]
        svg = app.export_screenshot()
        assert "4111111111111111" not in svg and "DOE" not in svg
        assert "411111******1111" in svg.replace("&#160;", " ")
        await pilot.press("escape")
        assert isinstance(app.screen, SaleScreen)
        assert "Last sale PAID" in str(app.screen.query_one("#message", Static).content)
    assert balances(card_psp, shop.merchant_id)["merchant_pending"] == 12_50 - 13


async def test_each_decline_shows_the_banks_reason_and_charges_nothing(
    card_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with card_till(card_psp, shop, tmp_path / "till") as (app, pilot):
        await type_burst(pilot, "7.00", enter=False)
        for pan, (code, reason) in DECLINES.items():
            await pilot.press("f2")  # the sale keeps its amount after a decline
            screen = app.screen
            assert isinstance(screen, CardScreen)
            await type_burst(pilot, track(pan))
            await answered(pilot, screen)
            assert screen.state == "declined", (pan, screen.status_text)
            assert screen.status_text == f"DECLINED: {reason} ({code})"
            assert screen.advice_text
            assert screen.card_text == f"Visa  {pan[:6]}******{pan[-4:]}"
            (stored,) = server_payments(card_psp, shop.api_key, order_of(screen))
            assert stored.status == c.PAYMENT_STATUS_DECLINED
            assert stored.card.response_code == code
            await pilot.press("escape")
            assert "DECLINED" in str(app.screen.query_one("#message", Static).content)
    assert balances(card_psp, shop.merchant_id) == {}


async def test_the_no_answer_card_is_reported_not_charged_and_nothing_is_left(
    card_psp: LivePsp, shop: MerchantCreds, cardnet: CardnetProcess, tmp_path: Path
) -> None:
    async with card_till(card_psp, shop, tmp_path / "till") as (app, pilot):
        screen = await swipe(app, pilot, "9.90", NO_ANSWER)
        await until(pilot, lambda: screen.status_text == "Authorizing…", what="authorizing")
        assert screen.card_text == "Visa  400000******0119"
        await answered(pilot, screen, timeout=15)
        assert screen.state == "not_charged", screen.status_text
        assert screen.status_text == NOT_CHARGED
        assert app.journal.pending() == []  # the attempt is over: nothing to resume
        # The PSP recorded nothing and the network holds nothing: the sale was reversed.
        assert card_psp.app.admin.ledger_check() == []
        assert balances(card_psp, shop.merchant_id) == {}
        assert cardnet.holds(shop.merchant_id) == 0
        assert set(cardnet.statuses(shop.merchant_id).values()) == {"reversed"}
        with card_psp.channel() as channel:
            listed = merchant_pb2_grpc.MerchantServiceStub(channel).ListPayments(
                m.ListPaymentsRequest(), metadata=bearer(shop.api_key)
            )
        assert list(listed.payments) == []
        # Another card on the same screen goes through, as a new attempt.
        await type_burst(pilot, track("5555555555554444"))
        await answered(pilot, screen)
        assert screen.state == "approved"
        assert screen.card_text == "Mastercard  555555******4444"
    assert balances(card_psp, shop.merchant_id)["merchant_pending"] == 9_90 - 10


# -- History: void and refund ------------------------------------------------------------


async def test_void_of_a_card_sale_from_history(
    card_psp: LivePsp, shop: MerchantCreds, cardnet: CardnetProcess, tmp_path: Path
) -> None:
    async with card_till(card_psp, shop, tmp_path / "till") as (app, pilot):
        screen = await swipe(app, pilot, "30", "4111111111111111")
        await answered(pilot, screen)
        assert screen.state == "approved"
        assert screen.payment is not None
        payment_id = screen.payment.id
        detail = await open_in_history(app, pilot, payment_id)
        assert detail.check_action("void", ()) is True
        await pilot.press("v")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("enter")
        await settle(pilot)
        assert detail.message == "Voided 30.00 EUR: nothing is charged to the card. Status: VOIDED."
        assert "VOIDED" in str(detail.query_one("#receipt", Static).content)
        assert detail.check_action("void", ()) is None  # greyed out now
        assert detail.check_action("refund", ()) is None
        (stored,) = server_payments(card_psp, shop.api_key, screen.payment.order_id)
        assert stored.status == c.PAYMENT_STATUS_VOIDED
    assert set(cardnet.statuses(shop.merchant_id).values()) == {"reversed"}
    assert balances(card_psp, shop.merchant_id) == {}


async def test_partial_then_full_refund_of_a_card_sale_from_history(
    card_psp: LivePsp, shop: MerchantCreds, tmp_path: Path
) -> None:
    async with card_till(card_psp, shop, tmp_path / "till") as (app, pilot):
        screen = await swipe(app, pilot, "50", "4111111111111111")
        await answered(pilot, screen)
        assert screen.payment is not None
        payment_id = screen.payment.id
        detail = await open_in_history(app, pilot, payment_id)
        await pilot.press("r")
        assert isinstance(app.screen, AmountScreen)
        await press_burst(pilot, *["backspace"] * 6)
        await type_burst(pilot, "20", enter=False)
        await pilot.press("enter", "enter")  # the amount, then the confirmation
        await settle(pilot)
        assert detail.message == "Refunded 20.00 EUR. Status: PART REFUNDED.", detail.message
        await pilot.press("r", "enter", "enter")  # what is left: 30.00
        await settle(pilot)
        assert detail.message == "Refunded 30.00 EUR. Status: REFUNDED.", detail.message
        assert detail.check_action("refund", ()) is None
        assert detail.check_action("void", ()) is None
        (stored,) = server_payments(card_psp, shop.api_key, screen.payment.order_id)
        assert stored.status == c.PAYMENT_STATUS_REFUNDED
        assert stored.refunded.amount_minor == 50_00


# -- end of day ---------------------------------------------------------------------------


async def test_end_of_day_closes_the_card_batch_and_a_second_close_has_nothing(
    card_psp: LivePsp, shop: MerchantCreds, cardnet: CardnetProcess, tmp_path: Path
) -> None:
    async with card_till(card_psp, shop, tmp_path / "till") as (app, pilot):
        screen = await swipe(app, pilot, "80", "4111111111111111")
        await answered(pilot, screen)
        assert screen.state == "approved"
        await pilot.press("escape", "f5")
        await settle(pilot)
        day = app.screen
        assert isinstance(day, EndOfDayScreen)
        await pilot.press("b")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("enter")
        await settle(pilot)
        batch = day.last_batch
        assert batch is not None, day.message
        assert day.message == "Card batch closed: 1 transaction(s) sent for settlement."
        # A credit card sale of 80.00: interchange 0.30 % = 0.24, scheme 0.05 % + 0.02 = 0.06.
        assert (batch.count, batch.gross.amount_minor, batch.net.amount_minor) == (1, 8000, 7970)
        lines = day.batch_text.splitlines()
        assert lines[0] == f"Card batch {batch.id}"
        text = " ".join(" ".join(line.split()) for line in lines)
        for part in (
            "Transactions settled 1",
            "Gross 80.00 EUR",
            "Fees -0.30 EUR",
            "Net to be paid out 79.70 EUR",
        ):
            assert part in text, text
        csv = (cardnet.settlement_dir / f"{batch.id}.csv").read_text().splitlines()
        (row,) = [r for r in csv[1:] if shop.merchant_id in r]
        assert row.split(",")[4:9] == ["payment", "8000", "24", "6", "7970"]
        # Nothing new since: the till says so instead of showing an empty summary.
        await pilot.press("b", "enter")
        await settle(pilot)
        assert day.last_batch is not None and day.last_batch.count == 0
        assert day.message.startswith("Nothing new to settle")
        assert day.batch_text == ""
        assert app.journal.pending() == []
