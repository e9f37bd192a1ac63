"""The wallet's state: one observable object per browser session.

Views read its fields and call its async methods; the methods call the client and change
fields, and every view that was given the state re-renders. Nothing here touches a Flet
control: the few browser facilities the flows need (the token storage, the file picker,
the browser camera) come in through small protocols, so the whole state runs in tests
without a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import flet as ft

from psp_server.domain.money import Money, MoneyError
from wallet_app.client import (
    SESSION_ENDED,
    AuthSession,
    Balance,
    ClientError,
    Consumer,
    Quote,
    QuoteWarning,
    Receipt,
    Transaction,
    WalletClient,
    qr_currency_hint,
)

log = logging.getLogger(__name__)

SIGN_IN = "/signin"
HOME = "/"
SCAN = "/scan"
CONFIRM = "/confirm"
RECEIPT = "/receipt"
HISTORY = "/history"
LOADING = "/loading"

#: The wallet's own scheme; a code of any other is named and refused.
OWN_SCHEME = "SCANPAY"

#: Quote warnings that make a code unpayable, and what to tell the consumer.
BLOCKING_WARNINGS = {
    "PAYMENT_EXPIRED": ("This code has expired", "Ask the cashier for a new code."),
    "PAYMENT_ALREADY_PAID": (
        "This code has already been paid",
        "Nothing more is due. Check your history if you think you paid it.",
    ),
    "PAYMENT_CANCELED": ("The shop canceled this payment", "Ask the cashier for a new code."),
    "QR_FOREIGN_SCHEME": ("This wallet cannot pay that code", ""),
}

#: Friendly titles (and advice) per stable reason. The server's own message is shown
#: when no advice is given here.
FRIENDLY: dict[str, tuple[str, str]] = {
    "INVALID_CREDENTIALS": ("Wrong e-mail or password", "Check both and try again."),
    "LOGIN_THROTTLED": ("Too many attempts", "Wait a minute, then try again."),
    "EMAIL_TAKEN": ("That e-mail is already registered", "Sign in instead."),
    "WEAK_PASSWORD": ("Choose a longer password", ""),
    "INVALID_EMAIL": ("That is not an e-mail address", ""),
    SESSION_ENDED: ("Please sign in again", "Your session has ended."),
    "INSUFFICIENT_FUNDS": ("Not enough money in your wallet", "Top up, then pay again."),
    "LIMIT_EXCEEDED": ("Over your limit", ""),
    "PAYMENT_EXPIRED": BLOCKING_WARNINGS["PAYMENT_EXPIRED"],
    "PAYMENT_ALREADY_PAID": BLOCKING_WARNINGS["PAYMENT_ALREADY_PAID"],
    "PAYMENT_CANCELED": BLOCKING_WARNINGS["PAYMENT_CANCELED"],
    "QUOTE_EXPIRED": (
        "The exchange rate has expired",
        "Get a new rate, check it, and confirm again.",
    ),
    "QR_MALFORMED": ("That is not a payment code", "Scan the shop's payment QR code."),
    "QR_CRC_MISMATCH": ("The code did not read cleanly", "Scan it again."),
    "QR_FOREIGN_SCHEME": ("This wallet cannot pay that code", ""),
    "QR_UNKNOWN": ("ScanPay does not know this code", "Ask the shop for its ScanPay code."),
    "NO_QR_FOUND": ("No QR code found", "Try again with the whole code in the picture."),
    "AMOUNT_REQUIRED": ("Enter the amount", ""),
    "INVALID_AMOUNT": ("That amount is not valid", ""),
    "AMOUNT_TOO_LARGE": ("That amount is too large", ""),
    "CURRENCY_MISMATCH": ("Wrong currency", ""),
    "UNAVAILABLE": (
        "ScanPay cannot be reached",
        "Check the connection and try again. Paying again is safe: you are never charged twice.",
    ),
    "DEADLINE_EXCEEDED": (
        "ScanPay did not answer in time",
        "Try again. Paying again is safe: you are never charged twice.",
    ),
    "CAMERA_UNAVAILABLE": ("The camera cannot be used", ""),
}


@dataclass(frozen=True, slots=True)
class Notice:
    """Something to tell the consumer: an error, a warning or a plain note."""

    title: str
    message: str = ""
    reason: str = ""
    kind: str = "error"  # "error", "warning" or "info"


def notice_for(reason: str, message: str = "") -> Notice:
    title, advice = FRIENDLY.get(reason, ("Something went wrong", ""))
    said = sentence(message)
    if said.rstrip(".").lower() == title.lower():
        said = ""  # the server said what the title says
    text = " ".join(part for part in (said, advice) if part)
    return Notice(title=title, message=text, reason=reason)


def sentence(text: str) -> str:
    """Server messages are lower-case phrases; show them as sentences."""
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


class TokenStore(Protocol):
    """Where the refresh token lives between page loads (the browser's local storage)."""

    async def load(self) -> str | None: ...

    async def save(self, token: str) -> None: ...

    async def clear(self) -> None: ...


class BrowserCamera(Protocol):
    """The part of ``flet_camera.Camera`` the scan loop uses."""

    async def get_available_cameras(self) -> list[Any]: ...

    async def initialize(self, description: Any, resolution_preset: Any, **kw: Any) -> None: ...

    async def take_picture(self) -> bytes: ...


class CameraFrameLike(Protocol):
    @property
    def jpeg(self) -> bytes: ...

    @property
    def payloads(self) -> list[str]: ...


class CameraFeed(Protocol):
    """A camera on the serving machine (``wallet_app.camera.CameraHub``)."""

    @property
    def label(self) -> str: ...

    def frames(self) -> AsyncGenerator[CameraFrameLike, None]: ...


ImagePicker = Callable[[], Awaitable[bytes | None]]
ImageDecoder = Callable[[bytes], list[str]]
CameraSetup = Callable[[BrowserCamera], Awaitable[None]]


def decode_image(data: bytes) -> list[str]:
    """Decode every QR payload in an encoded picture (JPEG, PNG ...) with the scanner."""
    from wallet_app import scanner  # the decoder chain (pyzbar, OpenCV fallback)

    return list(scanner.decode_image_bytes(data).payloads)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_key() -> str:
    return uuid.uuid4().hex


@ft.observable
@dataclass
class WalletState:
    client: WalletClient
    storage: TokenStore
    pick_image: ImagePicker | None = None
    server_camera: CameraFeed | None = None
    decoder: ImageDecoder = decode_image
    clock: Callable[[], datetime] = _utcnow
    poll_seconds: float | None = 5.0
    tick_seconds: float = 1.0
    camera_interval: float = 0.25

    # where we are
    route: str = LOADING
    notice: Notice | None = None
    busy: bool = False

    # who and how much
    consumer: Consumer | None = None
    balance: Balance | None = None
    transactions: list[Transaction] = field(default_factory=list)
    history_next: str = ""
    topup_error: str = ""

    # scanning
    scan_source: str = ""  # "", "browser", "server", "photo"
    scan_status: str = ""
    scan_frames: int = 0
    server_preview: bytes | None = None

    # confirming and paying
    payload: str = ""
    quote: Quote | None = None
    quote_currency: str = ""
    amount_error: str = ""
    reference: str = ""
    pay_key: str = ""
    seconds_left: int | None = None
    quote_expired: bool = False
    paying: bool = False
    receipt: Receipt | None = None

    def __post_init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.client.on_session = self._on_session

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the previous session from the stored refresh token, or ask to sign in."""
        token = None
        try:
            token = await self.storage.load()
        except Exception:  # storage is a convenience; never block sign-in on it
            log.warning("could not read the stored session", exc_info=True)
        if not token:
            self.go(SIGN_IN)
            return
        try:
            await self.client.resume(token)
        except ClientError as err:
            if err.reason != SESSION_ENDED:
                self.notice = notice_for(err.reason, err.message)
            await self._forget_token()
            self.go(SIGN_IN)
            return
        await self._enter_home()

    async def close(self) -> None:
        """Stop every background task (the page closed)."""
        for name in list(self._tasks):
            self._cancel(name)
        await asyncio.sleep(0)

    def resume(self) -> None:
        """The browser came back: restart what the current screen runs in the background."""
        if self.route in (HOME, HISTORY) and self.poll_seconds and "poll" not in self._tasks:
            self._spawn("poll", self._poll())
        if self.route == CONFIRM and "ticker" not in self._tasks:
            self._start_ticker()

    def go(self, route: str) -> None:
        if route != SCAN:
            self._stop_scanning()
        if route != CONFIRM:
            self._cancel("ticker")
        if route not in (HOME, HISTORY):
            self._cancel("poll")
        self.route = route
        if route in (HOME, HISTORY) and self.poll_seconds:
            self._spawn("poll", self._poll())

    def dismiss(self) -> None:
        self.notice = None

    # -- sessions ---------------------------------------------------------------------------

    async def sign_in(self, email: str, password: str) -> None:
        email = email.strip()
        if not email or not password:
            self.notice = Notice("Enter your e-mail and password", reason="MISSING_FIELD")
            return
        await self._authenticate(self.client.login(email, password))

    async def register(
        self, email: str, password: str, display_name: str = "", currency: str = "EUR"
    ) -> None:
        email = email.strip()
        if not email or not password:
            self.notice = Notice("Enter an e-mail and a password", reason="MISSING_FIELD")
            return
        await self._authenticate(
            self.client.register(email, password, currency, display_name.strip())
        )

    async def _authenticate(self, call: Coroutine[Any, Any, AuthSession]) -> None:
        self.busy = True
        self.notice = None
        try:
            await call
        except ClientError as err:
            self.notice = notice_for(err.reason, err.message)
            return
        finally:
            self.busy = False
        await self._enter_home()

    async def sign_out(self) -> None:
        await self.client.sign_out()
        self.consumer = None
        self.balance = None
        self.transactions = []
        self._clear_payment()
        self.go(SIGN_IN)

    async def _on_session(self, session: AuthSession | None) -> None:
        """The client has a new session (or none): keep the refresh token in storage, in
        the background (the browser answers when it answers; signing in does not wait)."""
        if session is None:
            self._spawn("store", self._forget_token())
            return
        self.consumer = session.consumer
        self._spawn("store", self._store_token(session.refresh_token))

    async def _store_token(self, token: str) -> None:
        try:
            await self.storage.save(token)
        except Exception:
            log.warning("could not store the session", exc_info=True)

    async def _forget_token(self) -> None:
        try:
            await self.storage.clear()
        except Exception:
            log.warning("could not clear the stored session", exc_info=True)

    async def _enter_home(self) -> None:
        self.notice = None
        self.go(HOME)
        await self.refresh()

    def _failed(self, err: ClientError) -> None:
        """Show an error; an ended session sends the consumer back to sign in."""
        self.notice = notice_for(err.reason, err.message)
        if err.reason == SESSION_ENDED:
            self.consumer = None
            self.go(SIGN_IN)

    # -- home -------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Reload the balance and the latest transactions."""
        try:
            balance, page = await asyncio.gather(
                self.client.get_balance(), self.client.list_transactions(page_size=20)
            )
        except ClientError as err:
            self._failed(err)
            return
        self.balance = balance
        self.transactions = page.transactions
        self.history_next = page.next_page_token

    async def load_more(self) -> None:
        if not self.history_next:
            return
        try:
            page = await self.client.list_transactions(page_size=20, page_token=self.history_next)
        except ClientError as err:
            self._failed(err)
            return
        known = {t.id for t in self.transactions}
        self.transactions = [
            *self.transactions,
            *(t for t in page.transactions if t.id not in known),
        ]
        self.history_next = page.next_page_token

    async def _poll(self) -> None:
        """While home or history is shown, pick up refunds and payments as they come."""
        assert self.poll_seconds
        while True:
            await asyncio.sleep(self.poll_seconds)
            if self.busy or self.paying:
                continue
            with contextlib.suppress(ClientError):
                balance, page = await asyncio.gather(
                    self.client.get_balance(), self.client.list_transactions(page_size=20)
                )
                self.balance = balance
                known = {t.id for t in self.transactions}
                fresh = [t for t in page.transactions if t.id not in known]
                if fresh:
                    self.transactions = [*fresh, *self.transactions]

    async def top_up(self, text: str) -> bool:
        """Simulated bank transfer into the wallet. True when it went through."""
        currency = self._wallet_currency()
        try:
            amount = Money.parse(text, currency)
        except MoneyError as err:
            self.topup_error = str(err)
            return False
        if not amount.is_positive:
            self.topup_error = "Enter an amount above zero."
            return False
        self.topup_error = ""
        self.busy = True
        try:
            self.balance = await self.client.top_up(amount, _new_key())
        except ClientError as err:
            self._failed(err)
            return False
        finally:
            self.busy = False
        self.notice = Notice(f"Added {amount.format()}", kind="info")
        await self.refresh()
        return True

    def _wallet_currency(self) -> str:
        if self.balance is not None:
            return self.balance.available.currency
        if self.consumer is not None and self.consumer.currency:
            return self.consumer.currency
        return "EUR"

    # -- scanning ---------------------------------------------------------------------------

    def open_scanner(self) -> None:
        self.notice = None
        self.scan_source = ""
        self.scan_status = ""
        self.go(SCAN)

    def choose_source(self, source: str) -> None:
        """Pick how to scan: "browser" camera, "server" camera, or a "photo"."""
        self._stop_scanning()
        self.notice = None
        self.scan_source = source
        self.scan_frames = 0
        self.server_preview = None
        if source == "server":
            if self.server_camera is None:
                self.notice = notice_for(
                    "CAMERA_UNAVAILABLE", "this wallet was started without --camera"
                )
                self.scan_source = ""
                return
            self.scan_status = f"Looking through {self.server_camera.label}…"
            self._spawn("scan", self._scan_server_camera(self.server_camera))
        elif source == "browser":
            self.scan_status = "Starting the camera…"
        elif source == "photo":
            self.scan_status = ""

    async def scan_browser_camera(self, get_camera: Callable[[], BrowserCamera | None]) -> None:
        """Capture frames from the browser's camera until one decodes (or scanning stops).

        ``get_camera`` returns the camera control as currently rendered (a re-render makes a
        new control object that takes over the old one's identity).
        """
        camera = get_camera()
        if self.scan_source != "browser" or camera is None:
            return
        task = asyncio.current_task()
        if task is not None:
            self._adopt("scan", task)
        try:
            cameras = await camera.get_available_cameras()
            if not cameras:
                raise RuntimeError("no camera found in this browser")
            back = [c for c in cameras if _lens(c) == "back"]
            from flet_camera import ResolutionPreset

            await camera.initialize(
                (back or cameras)[0], ResolutionPreset.MEDIUM, enable_audio=False
            )
        except Exception as exc:  # permission refused, no device, insecure page
            if self.scan_source == "browser":
                self.notice = notice_for("CAMERA_UNAVAILABLE", _camera_message(exc))
                self.scan_status = ""
            return
        self.scan_status = "Point the camera at the QR code"
        while self.route == SCAN and self.scan_source == "browser":
            try:
                data = await (get_camera() or camera).take_picture()
            except Exception as exc:
                self.notice = notice_for("CAMERA_UNAVAILABLE", _camera_message(exc))
                return
            self.scan_frames += 1
            payloads = [p for p in await self._decode(bytes(data)) if _looks_like_emv(p)]
            if payloads and self.scan_source == "browser":
                self.scan_source = ""
                await self.submit_payload(payloads[0])
                return
            await asyncio.sleep(self.camera_interval)

    async def _scan_server_camera(self, feed: CameraFeed) -> None:
        found = ""
        try:
            async with contextlib.aclosing(feed.frames()) as frames:
                async for frame in frames:
                    if self.route != SCAN or self.scan_source != "server":
                        return
                    self.server_preview = frame.jpeg
                    self.scan_frames += 1
                    if frame.payloads:
                        found = frame.payloads[0]
                        break
        except Exception as exc:
            log.warning("server camera failed", exc_info=True)
            self.notice = notice_for("CAMERA_UNAVAILABLE", _camera_message(exc))
            return
        if found:
            self.scan_source = ""
            # Leave this task before resolving: going to Confirm cancels "scan".
            self._tasks.pop("scan", None)
            await self.submit_payload(found)
        elif self.scan_source == "server":
            self.scan_status = "The camera stream ended."

    async def scan_photo(self) -> None:
        """Let the consumer pick a photo (or take one, on a phone) and read its QR code."""
        if self.pick_image is None:
            self.notice = notice_for("CAMERA_UNAVAILABLE", "picking files is not available")
            return
        self.choose_source("photo")
        try:
            data = await self.pick_image()
        except Exception as exc:
            self.notice = notice_for("CAMERA_UNAVAILABLE", _camera_message(exc))
            return
        if not data:
            self.scan_source = ""
            return
        await self.scan_image(data)

    async def scan_image(self, data: bytes) -> None:
        """Read the QR code in a picture and go on to confirm it."""
        self.scan_status = "Reading the picture…"
        self.busy = True
        try:
            payloads = await self._decode(data)
        finally:
            self.busy = False
        self.scan_source = ""
        self.scan_status = ""
        if not payloads:
            self.notice = notice_for("NO_QR_FOUND")
            return
        await self.submit_payload(payloads[0])

    async def _decode(self, data: bytes) -> list[str]:
        """The QR payloads in a picture; an unreadable picture simply has none."""
        try:
            return list(await asyncio.to_thread(self.decoder, data))
        except Exception:
            log.debug("could not decode the picture", exc_info=True)
            return []

    def _stop_scanning(self) -> None:
        self._cancel("scan")
        self.server_preview = None

    # -- confirming -------------------------------------------------------------------------

    async def submit_payload(self, payload: str) -> None:
        """A QR code was read: ask the PSP what it is and show the confirmation."""
        payload = payload.strip()
        self._clear_payment()
        self.payload = payload
        self.quote_currency = qr_currency_hint(payload) or self._wallet_currency()
        self.busy = True
        try:
            quote = await self.client.resolve_qr(payload)
        except ClientError as err:
            self._failed(err)
            return
        finally:
            self.busy = False
        self._show_quote(quote)
        self.go(CONFIRM)
        self._start_ticker()

    async def enter_amount(self, text: str) -> None:
        """Static QR: price the amount the consumer typed (in the shop's currency)."""
        if not self.payload:
            return
        try:
            amount = Money.parse(text, self.quote_currency)
        except MoneyError as err:
            self.amount_error = str(err)
            return
        if not amount.is_positive:
            self.amount_error = "Enter an amount above zero."
            return
        self.amount_error = ""
        self.busy = True
        try:
            quote = await self.client.resolve_qr(self.payload, amount)
        except ClientError as err:
            if err.reason in ("INVALID_AMOUNT", "AMOUNT_TOO_LARGE", "CURRENCY_MISMATCH"):
                self.amount_error = notice_for(err.reason, err.message).message
            else:
                self._failed(err)
            return
        finally:
            self.busy = False
        self._show_quote(quote)
        self._start_ticker()

    def edit_amount(self) -> None:
        """Static QR: go back to the amount field."""
        q = self.quote
        if q is not None and q.initiation == "static":
            self.quote = Quote(
                payable=True,
                scheme=q.scheme,
                initiation="static",
                merchant=q.merchant,
                qr_merchant_name=q.qr_merchant_name,
                amount_required=True,
                warnings=q.warnings,
            )
            self.pay_key = ""
            self.seconds_left = None
            self.quote_expired = False
            self._cancel("ticker")

    async def requote(self) -> None:
        """The rate (or quote) expired: price the same code again; a new confirmation."""
        q = self.quote
        if q is None or not self.payload:
            return
        amount = q.amount if q.initiation == "static" else None
        self.busy = True
        try:
            quote = await self.client.resolve_qr(self.payload, amount)
        except ClientError as err:
            self._failed(err)
            return
        finally:
            self.busy = False
        self.notice = None
        self._show_quote(quote)
        self._start_ticker()

    def set_reference(self, text: str) -> None:
        self.reference = text

    def _show_quote(self, quote: Quote) -> None:
        self.quote = quote
        if quote.amount is not None:
            self.quote_currency = quote.amount.currency
        self.quote_expired = False
        self.seconds_left = None
        # One idempotency key per confirmation, made once, reused by every retry.
        self.pay_key = _new_key() if quote.payable and quote.quote_id else ""
        self.tick()

    @property
    def blocking(self) -> Notice | None:
        """Why the scanned code cannot be paid, if it cannot."""
        q = self.quote
        if q is None:
            return None
        for code, (title, advice) in BLOCKING_WARNINGS.items():
            w = q.warning(code)
            if w is not None:
                text = " ".join(p for p in (sentence(w.message), advice) if p)
                return Notice(title, text, reason=code)
        if q.scheme and q.scheme.upper() != OWN_SCHEME and not q.payable:
            return Notice(
                "This wallet cannot pay that code",
                f"This is a {q.scheme} code, from another payment network. "
                "This wallet can only pay ScanPay codes.",
                reason="QR_FOREIGN_SCHEME",
            )
        if not q.payable:
            return Notice("This code cannot be paid", reason="NOT_PAYABLE")
        return None

    @property
    def can_pay(self) -> bool:
        q = self.quote
        return (
            q is not None
            and q.payable
            and bool(q.quote_id)
            and not self.quote_expired
            and not self.paying
            and self.blocking is None
        )

    def tick(self) -> None:
        """Count down the quote's validity (the FX rate lock, or the code's expiry)."""
        q = self.quote
        if q is None or q.expires_at is None or not q.quote_id:
            self.seconds_left = None
            return
        left = int((q.expires_at - self.clock()).total_seconds())
        self.seconds_left = max(0, left)
        if left <= 0 and not self.quote_expired:
            self.quote_expired = True
            if q.fx_rate:
                self.notice = notice_for("QUOTE_EXPIRED")

    def _start_ticker(self) -> None:
        self._cancel("ticker")
        if self.quote is not None and self.quote.expires_at is not None:
            self._spawn("ticker", self._ticker())

    async def _ticker(self) -> None:
        while self.route == CONFIRM and not self.quote_expired:
            await asyncio.sleep(self.tick_seconds)
            self.tick()

    # -- paying -----------------------------------------------------------------------------

    async def pay(self) -> None:
        """Pay the confirmed quote. Pressing again after a failure reuses the same key."""
        q = self.quote
        if self.paying or q is None or not self.can_pay:
            return
        self.paying = True
        self.notice = None
        try:
            receipt = await self.client.pay(
                idempotency_key=self.pay_key,
                quote_id=q.quote_id,
                reference=self.reference.strip(),
            )
        except ClientError as err:
            self._failed(err)
            if err.reason == "QUOTE_EXPIRED":
                self.quote_expired = True
            elif err.reason in ("PAYMENT_EXPIRED", "PAYMENT_ALREADY_PAID", "PAYMENT_CANCELED"):
                self.quote = Quote(
                    payable=False,
                    scheme=q.scheme,
                    initiation=q.initiation,
                    merchant=q.merchant,
                    amount=q.amount,
                    warnings=(*q.warnings, _warning(err)),
                )
            return
        finally:
            self.paying = False
        self.receipt = receipt
        if receipt.balance_after is not None and self.balance is not None:
            self.balance = Balance(
                available=receipt.balance_after,
                kyc_tier=self.balance.kyc_tier,
                per_payment_limit=self.balance.per_payment_limit,
                daily_limit=self.balance.daily_limit,
                spent_today=self.balance.spent_today,
            )
        self.go(RECEIPT)
        self._spawn("after-pay", self.refresh())

    def cancel_payment(self) -> None:
        self._clear_payment()
        self.notice = None
        self.go(HOME)

    def done(self) -> None:
        self._clear_payment()
        self.notice = None
        self.go(HOME)

    def _clear_payment(self) -> None:
        self._cancel("ticker")
        self.payload = ""
        self.quote = None
        self.amount_error = ""
        self.reference = ""
        self.pay_key = ""
        self.seconds_left = None
        self.quote_expired = False
        self.receipt = None

    # -- tasks ------------------------------------------------------------------------------

    def _spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        self._cancel(name)
        task = asyncio.get_running_loop().create_task(coro)
        self._adopt(name, task)

    def _adopt(self, name: str, task: asyncio.Task[Any]) -> None:
        old = self._tasks.get(name)
        if old is not None and old is not task:
            old.cancel()
        self._tasks[name] = task

        def forget(t: asyncio.Task[Any]) -> None:
            if self._tasks.get(name) is t:
                del self._tasks[name]
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed", name, exc_info=t.exception())

        task.add_done_callback(forget)

    def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()


def _warning(err: ClientError) -> QuoteWarning:
    return QuoteWarning(err.reason, err.message)


def _looks_like_emv(payload: str) -> bool:
    """A live camera sees every QR code around; only EMV payment codes stop the scan."""
    return payload.startswith("000201")


def _lens(description: Any) -> str:
    direction = getattr(description, "lens_direction", "")
    return str(getattr(direction, "value", direction))


def _camera_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "NotAllowed" in text or "Permission" in text:
        return "the browser was not allowed to use the camera; allow it and try again"
    if "secure" in text.lower():
        return "the browser gives the camera only to HTTPS pages; start the wallet with --https"
    return text
