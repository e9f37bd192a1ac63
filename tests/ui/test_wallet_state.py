"""WalletState without a page: the flows, against the fake client."""

from __future__ import annotations

import asyncio

import pytest

from psp_server.domain.money import Money
from tests.wallet_fakes import (
    CHF_QR,
    DYNAMIC_QR,
    EXPIRED_QR,
    PAID_QR,
    PASSWORD,
    PIX_QR,
    STATIC_QR,
    FakeCameraFeed,
    FakeClock,
    FakeWalletClient,
    MemoryTokenStore,
    err,
    qr_png,
)
from wallet_app.client import SESSION_ENDED
from wallet_app.routes import PrefsTokenStore
from wallet_app.state import CONFIRM, HOME, RECEIPT, SCAN, SIGN_IN, WalletState


def text_decoder(data: bytes) -> list[str]:
    """Stands in for the QR decoder: a "picture" is the payload's bytes; NUL is no code."""
    return [] if not data or data.startswith(b"\x00") else [data.decode()]


def make_state(client=None, storage=None, **kw) -> WalletState:
    clock = kw.pop("clock", None) or FakeClock()
    client = client or FakeWalletClient(clock=clock)
    kw.setdefault("poll_seconds", None)
    return WalletState(
        client=client,
        storage=storage if storage is not None else MemoryTokenStore(),
        decoder=kw.pop("decoder", text_decoder),
        clock=clock,
        **kw,
    )


async def signed_in(**kw) -> WalletState:
    state = make_state(**kw)
    await state.start()
    await state.sign_in("ann@example.com", PASSWORD)
    assert state.route == HOME
    return state


async def test_start_without_a_stored_session_asks_to_sign_in():
    state = make_state()
    await state.start()
    assert state.route == SIGN_IN
    assert state.consumer is None


async def test_sign_in_loads_home_and_stores_the_refresh_token():
    storage = MemoryTokenStore()
    state = await signed_in(storage=storage)
    assert state.balance is not None and state.balance.available == Money(100_00, "EUR")
    assert state.consumer is not None and state.consumer.display_name == "Ann"
    assert storage.token == state.client.session.refresh_token


class SilentStore(MemoryTokenStore):
    """A browser that never answers a storage call."""

    async def save(self, token: str) -> None:
        await asyncio.Event().wait()


async def test_sign_in_does_not_wait_for_the_browser_to_store_the_session():
    storage = SilentStore()
    state = make_state(storage=storage)
    await state.start()
    await asyncio.wait_for(state.sign_in("ann@example.com", PASSWORD), 5)
    assert state.route == HOME
    assert state.balance is not None and state.balance.available == Money(100_00, "EUR")
    await state.close()


async def test_the_browser_storage_gives_up_when_the_browser_does_not_answer():
    class NeverAnswers:
        async def get(self, *key_and_value):
            await asyncio.Event().wait()

        set = remove = get

    store = PrefsTokenStore(NeverAnswers(), timeout=0.05)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await store.load()
    with pytest.raises(TimeoutError):
        await store.save("rt")
    state = make_state(storage=store)
    await state.start()  # a stored session that cannot be read: sign in
    assert state.route == SIGN_IN


@pytest.mark.parametrize(
    ("error", "title"),
    [
        (err("INVALID_CREDENTIALS"), "Wrong e-mail or password"),
        (err("LOGIN_THROTTLED", "too many attempts; wait 60 s"), "Too many attempts"),
        (err("UNAVAILABLE", "connection refused"), "ScanPay cannot be reached"),
    ],
)
async def test_sign_in_errors_are_explained(error, title):
    client = FakeWalletClient()
    client.fail("login", error)
    state = make_state(client)
    await state.start()
    await state.sign_in("ann@example.com", PASSWORD)
    assert state.route == SIGN_IN
    assert state.notice is not None and state.notice.title == title
    assert state.notice.reason == error.reason


async def test_a_stored_session_survives_a_reload():
    storage = MemoryTokenStore()
    first = await signed_in(storage=storage)
    # A page reload: a new state (new session) over the same browser storage.
    again = make_state(first.client, storage)
    await again.start()
    assert again.route == HOME
    assert again.balance is not None


async def test_a_dead_stored_session_is_forgotten():
    storage = MemoryTokenStore("rt-revoked")
    state = make_state(storage=storage)
    await state.start()
    assert state.route == SIGN_IN
    assert storage.token is None
    assert state.notice is None  # an ended session is not an error to show


async def test_register_a_new_account():
    state = make_state()
    await state.start()
    await state.register("bob@example.com", "long enough pw", "Bob", "USD")
    assert state.route == HOME
    assert state.balance.available == Money(0, "USD")
    await state.sign_out()
    await state.register("bob@example.com", "long enough pw", "Bob", "USD")
    assert state.notice.title == "That e-mail is already registered"


async def test_top_up():
    state = await signed_in()
    assert not await state.top_up("12.345")
    assert "decimal places" in state.topup_error
    assert await state.top_up("20")
    assert state.balance.available == Money(120_00, "EUR")
    assert state.transactions[0].kind == "top_up"


async def test_dynamic_qr_confirm_and_pay():
    state = await signed_in()
    await state.submit_payload(DYNAMIC_QR)
    assert state.route == CONFIRM
    q = state.quote
    assert q.merchant.name == "Corner Bakery"
    assert q.amount == Money(12_50, "EUR")
    assert q.warning("QR_NAME_MISMATCH") is not None
    assert state.blocking is None and state.can_pay
    key = state.pay_key
    assert key
    await state.pay()
    assert state.route == RECEIPT
    assert state.receipt.amount == Money(12_50, "EUR")
    assert state.balance.available == Money(87_50, "EUR")
    assert state.client.calls[-1][0] in ("pay", "get_balance", "list_transactions")
    pays = [kw for name, kw in state.client.calls if name == "pay"]
    assert [p["key"] for p in pays] == [key]
    state.done()
    assert state.route == HOME and state.quote is None


async def test_pay_again_after_a_failure_reuses_the_idempotency_key():
    state = await signed_in()
    state.client.fail("pay", err("UNAVAILABLE", "connection reset"))
    await state.submit_payload(DYNAMIC_QR)
    key = state.pay_key
    await state.pay()
    assert state.route == CONFIRM
    assert state.notice.title == "ScanPay cannot be reached"
    assert "never charged twice" in state.notice.message
    await state.pay()
    assert state.route == RECEIPT
    keys = [kw["key"] for name, kw in state.client.calls if name == "pay"]
    assert keys == [key, key]


async def test_a_second_tap_while_paying_is_ignored():
    state = await signed_in()
    await state.submit_payload(DYNAMIC_QR)
    gate = state.client.gate["pay"] = asyncio.Event()
    first = asyncio.create_task(state.pay())
    await asyncio.sleep(0)
    assert state.paying and not state.can_pay
    await state.pay()  # the second tap
    gate.set()
    await first
    assert len([1 for name, _ in state.client.calls if name == "pay"]) == 1


@pytest.mark.parametrize(
    ("reason", "title"),
    [
        ("INSUFFICIENT_FUNDS", "Not enough money in your wallet"),
        ("LIMIT_EXCEEDED", "Over your limit"),
        ("PAYMENT_EXPIRED", "This code has expired"),
    ],
)
async def test_payment_errors_are_explained(reason, title):
    state = await signed_in()
    await state.submit_payload(DYNAMIC_QR)
    state.client.fail("pay", err(reason, "the server says no"))
    await state.pay()
    assert state.route == CONFIRM
    assert state.notice.title == title
    assert "The server says no." in state.notice.message
    if reason == "PAYMENT_EXPIRED":
        assert not state.can_pay and state.blocking.reason == "PAYMENT_EXPIRED"


async def test_insufficient_funds_for_real():
    state = await signed_in(client=FakeWalletClient(balance_minor=5_00))
    await state.submit_payload(DYNAMIC_QR)
    await state.pay()
    assert state.notice.reason == "INSUFFICIENT_FUNDS"
    assert state.balance.available == Money(5_00, "EUR")


async def test_static_qr_takes_an_amount():
    state = await signed_in()
    await state.submit_payload(STATIC_QR)
    assert state.quote.amount_required and not state.can_pay
    assert state.quote_currency == "EUR"  # from the code's tag 53
    await state.enter_amount("abc")
    assert state.amount_error
    await state.enter_amount("0")
    assert state.amount_error == "Enter an amount above zero."
    state.set_reference("table 4")
    await state.enter_amount("7.50")
    assert state.amount_error == ""
    assert state.quote.amount == Money(7_50, "EUR") and state.can_pay
    await state.pay()
    assert state.receipt.amount == Money(7_50, "EUR")
    assert state.receipt.order_id == "table 4"
    pay = next(kw for name, kw in state.client.calls if name == "pay")
    assert pay["reference"] == "table 4"


async def test_fx_quote_counts_down_and_expires():
    clock = FakeClock()
    state = await signed_in(clock=clock)
    await state.submit_payload(CHF_QR)
    q = state.quote
    assert q.fx_rate == "1.0512"
    assert q.payer_amount == Money(10_51, "EUR")
    assert state.seconds_left == 30
    clock.advance(12)
    state.tick()
    assert state.seconds_left == 18 and state.can_pay
    first_key = state.pay_key
    clock.advance(19)
    state.tick()
    assert state.seconds_left == 0 and state.quote_expired and not state.can_pay
    assert state.notice.reason == "QUOTE_EXPIRED"
    await state.pay()  # refused locally
    assert not [1 for name, _ in state.client.calls if name == "pay"]
    await state.requote()
    assert state.can_pay and state.seconds_left == 30
    assert state.pay_key != first_key  # a new confirmation gets a new key
    assert state.notice is None


async def test_a_quote_the_server_calls_expired():
    state = await signed_in()
    await state.submit_payload(CHF_QR)
    state.client.fail("pay", err("QUOTE_EXPIRED", "the quote has expired"))
    await state.pay()
    assert state.quote_expired and not state.can_pay
    assert state.notice.title == "The exchange rate has expired"


@pytest.mark.parametrize(
    ("payload", "reason", "words"),
    [
        (PIX_QR, "QR_FOREIGN_SCHEME", "Pix"),
        (EXPIRED_QR, "PAYMENT_EXPIRED", "expired"),
        (PAID_QR, "PAYMENT_ALREADY_PAID", "already been paid"),
    ],
)
async def test_codes_that_cannot_be_paid(payload, reason, words):
    state = await signed_in()
    await state.submit_payload(payload)
    assert state.route == CONFIRM
    blocking = state.blocking
    assert blocking is not None and blocking.reason == reason
    assert words in blocking.title + blocking.message
    assert not state.can_pay and state.pay_key == ""


async def test_a_malformed_code_stays_on_the_scanner():
    state = await signed_in()
    state.open_scanner()
    await state.submit_payload("hello world")
    assert state.route == SCAN
    assert state.notice.title == "That is not a payment code"


async def test_a_picture_without_a_code():
    state = await signed_in(decoder=lambda data: [])
    state.open_scanner()
    await state.scan_image(b"not a qr")
    assert state.notice.reason == "NO_QR_FOUND"
    assert state.route == SCAN


async def test_photo_from_the_picker():
    pictures = [qr_png(DYNAMIC_QR)]

    async def pick():
        return pictures.pop() if pictures else None

    from wallet_app.state import decode_image

    state = await signed_in(pick_image=pick, decoder=decode_image)
    state.open_scanner()
    await state.scan_photo()
    assert state.route == CONFIRM and state.payload == DYNAMIC_QR
    state.cancel_payment()
    state.open_scanner()
    await state.scan_photo()  # the consumer closed the dialog
    assert state.route == SCAN and state.notice is None


async def test_server_camera_frames_until_a_code():
    feed = FakeCameraFeed(DYNAMIC_QR, blank_frames=4)
    state = await signed_in(server_camera=feed)
    state.open_scanner()
    state.choose_source("server")
    for _ in range(200):
        if state.route == CONFIRM:
            break
        await asyncio.sleep(0)
    assert state.route == CONFIRM
    assert state.scan_frames == 5
    assert feed.watching == 0


async def test_server_camera_missing():
    state = await signed_in()
    state.open_scanner()
    state.choose_source("server")
    assert state.notice.reason == "CAMERA_UNAVAILABLE"
    assert "--camera" in state.notice.message


class FakeBrowserCamera:
    def __init__(self, pictures):
        self.pictures = list(pictures)
        self.initialized = None

    async def get_available_cameras(self):
        from flet_camera import CameraDescription, CameraLensDirection

        return [
            CameraDescription("front", CameraLensDirection.FRONT, 0),
            CameraDescription("back", CameraLensDirection.BACK, 90),
        ]

    async def initialize(self, description, resolution_preset, **kw):
        self.initialized = description

    async def take_picture(self):
        return self.pictures.pop(0) if len(self.pictures) > 1 else self.pictures[0]


async def test_browser_camera_prefers_the_back_camera_and_captures_until_a_code():
    camera = FakeBrowserCamera([b"\x00", b"\x00", DYNAMIC_QR.encode()])
    state = await signed_in(camera_interval=0)
    state.open_scanner()
    state.choose_source("browser")
    await state.scan_browser_camera(lambda: camera)
    assert camera.initialized.name == "back"
    assert state.route == CONFIRM
    assert state.scan_frames == 3


async def test_browser_camera_refused():
    class Refused(FakeBrowserCamera):
        async def initialize(self, description, resolution_preset, **kw):
            raise RuntimeError("NotAllowedError: Permission denied")

    state = await signed_in()
    state.open_scanner()
    state.choose_source("browser")
    await state.scan_browser_camera(lambda: Refused([b""]))
    assert state.notice.reason == "CAMERA_UNAVAILABLE"
    assert "allow" in state.notice.message


async def test_an_ended_session_sends_back_to_sign_in():
    state = await signed_in()
    state.client.fail("get_balance", err(SESSION_ENDED, "sign in again"))
    await state.refresh()
    assert state.route == SIGN_IN
    assert state.notice.title == "Please sign in again"


async def test_refunds_show_up_while_home_is_open():
    state = await signed_in(poll_seconds=0.01)
    await state.submit_payload(DYNAMIC_QR)
    await state.pay()
    state.done()
    await asyncio.wait_for(_until(lambda: len(state.transactions) == 1), 5)
    state.client.add_refund(state.receipt.payment_id if state.receipt else "pay_x", 2_50)
    await asyncio.wait_for(_until(lambda: state.transactions[0].kind == "refund"), 5)
    assert state.balance.available == Money(90_00, "EUR")
    await state.close()


async def test_polling_stops_while_the_browser_is_away():
    state = await signed_in(poll_seconds=0.01)
    assert "poll" in state._tasks
    await state.close()  # the tab disconnected
    assert not state._tasks
    state.resume()  # and came back
    assert "poll" in state._tasks
    await state.close()


async def test_history_pages():
    client = FakeWalletClient()
    state = await signed_in(client=client)
    for _ in range(25):
        await state.top_up("1")
    assert len(state.transactions) == 20 and state.history_next
    await state.load_more()
    assert len(state.transactions) == 25 and not state.history_next


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.005)
