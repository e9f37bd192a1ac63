"""The wallet's screens in a real Flet session without a browser: type, click, read."""

from __future__ import annotations

import pytest

from tests.wallet_fakes import (
    CHF_QR,
    DYNAMIC_QR,
    PAID_QR,
    PASSWORD,
    PIX_QR,
    STATIC_QR,
    FakeCameraFeed,
    FakeClock,
    FakeWalletClient,
    Harness,
    err,
    qr_png,
)
from wallet_app.routes import run_session
from wallet_app.state import WalletState


async def open_wallet(
    client: FakeWalletClient | None = None, harness: Harness | None = None, **kw
) -> tuple[Harness, WalletState]:
    h = harness or Harness()
    client = client or FakeWalletClient()

    async def main(page):
        state = await run_session(page, client, **kw)
        state.poll_seconds = None
        state.camera_interval = 0
        return state

    state = await h.start(main)
    return h, state


async def sign_in(h: Harness, email="ann@example.com", password=PASSWORD) -> None:
    await h.type("email", email)
    await h.type("password", password)
    await h.click("submit")
    await h.until(lambda: h.has("balance") or h.has("notice"))


@pytest.fixture
async def wallet():
    opened: list[tuple[Harness, WalletState]] = []

    async def make(**kw):
        pair = await open_wallet(**kw)
        opened.append(pair)
        return pair

    yield make
    for h, state in opened:
        await state.close()
        await h.close()


async def test_sign_in_screen_and_a_wrong_password(wallet):
    h, _state = await wallet()
    assert h.shows("Sign in to pay with a scan")
    await sign_in(h, password="nope")
    assert h.text("notice-title") == "Wrong e-mail or password"
    await sign_in(h)
    assert h.text("balance") == "100.00 EUR"
    assert h.shows("Hello Ann")
    assert not h.has("notice")


async def test_signed_in_state_survives_a_reload(wallet):
    client = FakeWalletClient()
    h, _ = await wallet(client=client)
    await sign_in(h)
    assert h.prefs  # the refresh token is in the browser's storage
    # Reload: a new session in the same browser (same local storage).
    h2 = Harness()
    h2.prefs = h.prefs
    h2, _ = await wallet(client=client, harness=h2)
    assert h2.has("balance")
    assert not h2.has("email")


async def test_create_an_account(wallet):
    h, _ = await wallet()
    await h.click("toggle")
    await h.type("email", "zoe@example.com")
    await h.type("password", "a long password")
    await h.type("display-name", "Zoe")
    await h.select("currency", "USD")
    await h.click("submit")
    await h.until(lambda: h.has("balance"))
    assert h.text("balance") == "0.00 USD"
    assert h.shows("Hello Zoe")


async def test_top_up_from_home(wallet):
    h, _ = await wallet()
    await sign_in(h)
    await h.type("topup-amount", "1.234")
    await h.click("topup")
    assert "decimal places" in str(h.find("topup-amount").error)
    await h.type("topup-amount", "25")
    await h.click("topup")
    await h.until(lambda: h.text("balance") == "125.00 EUR")
    assert h.shows("Added 25.00 EUR")
    assert h.shows("+25.00 EUR")


async def test_scan_a_photo_confirm_and_pay(wallet):
    h, _state = await wallet()
    await sign_in(h)
    await h.click("scan")
    h.picked.append(qr_png(DYNAMIC_QR))
    await h.click("source-photo")
    await h.until(lambda: h.has("pay"))
    # The verified name from the PSP, and the warning that the code's name differs.
    assert h.text("merchant") == "Corner Bakery"
    assert h.shows("Verified by ScanPay")
    assert h.has("warning-QR_NAME_MISMATCH")
    assert h.shows("The code says 'BAKERY' but pays 'Corner Bakery'")
    assert h.text("amount-due") == "12.50 EUR"
    assert h.find("pay").content == "Pay 12.50 EUR"
    await h.click("pay")
    await h.until(lambda: h.has("receipt-title"))
    assert h.text("receipt-title") == "Payment successful"
    assert h.text("receipt-merchant") == "Paid Corner Bakery"
    assert h.text("receipt-balance") == "New balance 87.50 EUR"
    await h.click("done")
    await h.until(lambda: h.has("balance"))
    assert h.text("balance") == "87.50 EUR"
    assert h.shows("-12.50 EUR")


async def test_static_code_with_amount_entry(wallet):
    h, _state = await wallet()
    await sign_in(h)
    await h.click("scan")
    await h.type("manual-code", STATIC_QR)
    await h.click("manual-submit")
    await h.until(lambda: h.has("amount"))
    assert not h.has("pay")
    assert h.find("amount").label == "Amount (EUR)"
    await h.type("amount", "seven")
    await h.click("review")
    assert h.find("amount").error
    await h.type("amount", "7.50")
    await h.type("reference", "table 4")
    await h.click("review")
    await h.until(lambda: h.has("pay"))
    assert h.find("pay").content == "Pay 7.50 EUR"
    await h.click("edit")  # change the amount
    await h.type("amount", "8")
    await h.click("review")
    await h.until(lambda: h.has("pay") and h.find("pay").content == "Pay 8.00 EUR")
    await h.click("pay")
    await h.until(lambda: h.has("receipt-title"))
    assert h.shows("Order: table 4")


async def test_fx_rate_countdown_and_expiry(wallet):
    clock = FakeClock()
    client = FakeWalletClient(clock=clock)
    h, state = await wallet(client=client)
    state.clock = clock
    await sign_in(h)
    await state.submit_payload(CHF_QR)
    await h.until(lambda: h.has("pay"))
    assert h.text("amount-due") == "10.00 CHF"
    assert h.text("payer-amount") == "You pay 10.51 EUR"
    assert h.text("fx-rate") == "Rate 1.0512 EUR per CHF"
    assert h.text("countdown") == "Rate held for 0:30"
    clock.advance(5)
    state.tick()
    await h.settle()
    assert h.text("countdown") == "Rate held for 0:25"
    clock.advance(30)
    state.tick()
    await h.settle()
    assert h.text("countdown") == "Rate expired"
    assert h.find("pay").disabled
    assert h.text("notice-title") == "The exchange rate has expired"
    await h.click("requote")
    await h.until(lambda: not h.find("pay").disabled)
    assert h.text("countdown") == "Rate held for 0:30"
    await h.click("pay")
    await h.until(lambda: h.has("receipt-fx"))
    assert h.text("receipt-fx") == "Charged 10.51 EUR at 1.0512 EUR per CHF"


@pytest.mark.parametrize(
    ("payload", "title", "words"),
    [
        (PIX_QR, "This wallet cannot pay that code", "Pix"),
        (PAID_QR, "This code has already been paid", "Nothing more is due"),
    ],
)
async def test_codes_that_cannot_be_paid(wallet, payload, title, words):
    h, _state = await wallet()
    await sign_in(h)
    await h.click("scan")
    await h.type("manual-code", payload)
    await h.click("manual-submit")
    await h.until(lambda: h.has("blocking"))
    assert h.text("blocking-title") == title
    assert words in h.text("blocking-message")
    assert not h.has("pay")
    await h.click("rescan")
    assert h.has("source-photo")


async def test_payment_errors_on_the_confirm_screen(wallet):
    client = FakeWalletClient(balance_minor=10_00)
    h, state = await wallet(client=client)
    await sign_in(h)
    await state.submit_payload(DYNAMIC_QR)
    await h.until(lambda: h.has("pay"))
    await h.click("pay")
    await h.until(lambda: h.has("notice"))
    assert h.text("notice-title") == "Not enough money in your wallet"
    assert "Top up" in h.text("notice-message")
    client.fail("pay", err("LIMIT_EXCEEDED", "that is over your daily limit of 50.00 EUR"))
    await h.click("pay")
    await h.until(lambda: h.text("notice-title") == "Over your limit")
    assert h.text("notice-message") == "That is over your daily limit of 50.00 EUR."
    client.fail("pay", err("PAYMENT_EXPIRED", "the payment has expired"))
    await h.click("pay")
    await h.until(lambda: h.has("blocking"))
    assert h.text("blocking-title") == "This code has expired"


async def test_browser_camera_preview_captures_until_a_code(wallet):
    h, _state = await wallet()
    await sign_in(h)
    await h.click("scan")
    h.camera_pictures[:] = [qr_png("HELLO"), b"not even a picture", qr_png(DYNAMIC_QR)]
    await h.click("source-browser")
    assert h.has("camera")  # the live preview
    await h.until(lambda: h.has("pay"), timeout=10)
    calls = [name for kind, name, _ in h.conn.invoked if kind == "Camera"]
    assert calls[:2] == ["get_available_cameras", "initialize"]
    assert calls.count("take_picture") == 3  # a code that is not a payment code is skipped
    init = next(args for kind, name, args in h.conn.invoked if name == "initialize")
    assert init["description"].name == "back"


async def test_shop_camera_frames_are_shown_live(wallet):
    feed = FakeCameraFeed(DYNAMIC_QR, blank_frames=2)
    h, state = await wallet(camera=feed)
    await sign_in(h)
    await h.click("scan")
    await h.click("source-server")
    await h.until(lambda: h.has("pay"))
    assert state.scan_frames == 3


async def test_history_with_a_refund(wallet):
    client = FakeWalletClient()
    h, state = await wallet(client=client)
    await sign_in(h)
    await state.submit_payload(DYNAMIC_QR)
    await h.until(lambda: h.has("pay"))
    await h.click("pay")
    await h.until(lambda: h.has("done"))
    await h.click("done")
    client.add_refund("pay_x", 2_50)
    await h.click("history")
    await h.until(lambda: h.has("history-list"))
    assert h.shows("+2.50 EUR") is False  # not fetched yet: the poller is off in this test
    await state.refresh()
    await h.settle()
    assert h.shows("+2.50 EUR")
    assert any("Refund" in t for t in h.texts())
