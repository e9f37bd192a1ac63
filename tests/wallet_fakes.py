"""Test doubles for the wallet: a fake PSP client, token storage, camera feed, and a Flet
harness that runs the real app in a real ``Session`` over a recording connection (no
browser): tests type into fields, click buttons and read what the page shows."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import flet as ft
import grpc
import msgpack
import qrcode
from flet.controls.context import _context_page
from flet.messaging.connection import Connection
from flet.messaging.protocol import (
    Message,
    MessageAction,
    RegisterClientResponseBody,
    configure_encode_object_for_msgpack,
)
from flet.messaging.session import Session
from flet.pubsub.pubsub_hub import PubSubHub

from psp_server.domain.money import Money
from wallet_app.client import (
    SESSION_ENDED,
    AuthSession,
    Balance,
    ClientError,
    Consumer,
    Merchant,
    Quote,
    QuoteWarning,
    Receipt,
    Transaction,
    TransactionPage,
)

PASSWORD = "correct horse"
BAKERY = Merchant(id="mer_1", name="Corner Bakery", city="Berlin", country="DE", mcc="5462")


def qr_png(payload: str) -> bytes:
    """A clean PNG of a QR code holding ``payload``."""
    buf = io.BytesIO()
    qrcode.make(payload).save(buf, format="PNG")
    return buf.getvalue()


def emv(fields: list[tuple[str, str]]) -> str:
    """An EMV MPM-looking payload (no CRC check needed by the fake client)."""
    return "".join(f"{tag}{len(value):02d}{value}" for tag, value in fields)


DYNAMIC_QR = emv([("00", "01"), ("01", "12"), ("53", "978"), ("54", "12.50"), ("59", "BAKERY")])
STATIC_QR = emv([("00", "01"), ("01", "11"), ("53", "978"), ("59", "Corner Bakery")])
CHF_QR = emv([("00", "01"), ("01", "12"), ("53", "756"), ("59", "Alpine Cafe")])
PIX_QR = emv([("00", "01"), ("01", "12"), ("26", "0014br.gov.bcb.pix"), ("53", "986")])
EXPIRED_QR = emv([("00", "01"), ("01", "12"), ("53", "978"), ("62", "expired")])
PAID_QR = emv([("00", "01"), ("01", "12"), ("53", "978"), ("62", "paid")])


def err(reason: str, message: str = "", code: grpc.StatusCode | None = None) -> ClientError:
    codes = {
        "INVALID_CREDENTIALS": grpc.StatusCode.UNAUTHENTICATED,
        "LOGIN_THROTTLED": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
        SESSION_ENDED: grpc.StatusCode.UNAUTHENTICATED,
        "EMAIL_TAKEN": grpc.StatusCode.ALREADY_EXISTS,
    }
    return ClientError(
        reason,
        message or reason.lower().replace("_", " "),
        code or codes.get(reason, grpc.StatusCode.FAILED_PRECONDITION),
    )


@dataclasses.dataclass
class Code:
    """What the fake PSP knows about a QR payload."""

    merchant: Merchant | None
    amount: Money | None  # None: static QR
    currency: str = "EUR"
    scheme: str = "SCANPAY"
    warnings: tuple[QuoteWarning, ...] = ()
    fx_rate: str = ""  # payer units per merchant unit
    payable: bool = True
    order_id: str = ""


class FakeWalletClient:
    """An in-memory ``WalletClient``: one consumer, a few codes, scripted failures."""

    def __init__(
        self,
        email: str = "ann@example.com",
        currency: str = "EUR",
        balance_minor: int = 100_00,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.email = email
        self.consumer = Consumer("con_1", email, "Ann", currency, 2)
        self.available = Money(balance_minor, currency)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.on_session: Any = None
        self._session: AuthSession | None = None
        self.refresh_tokens: set[str] = set()
        self.transactions: list[Transaction] = []
        self.codes: dict[str, Code] = {
            DYNAMIC_QR: Code(
                BAKERY,
                Money(12_50, "EUR"),
                warnings=(
                    QuoteWarning(
                        "QR_NAME_MISMATCH",
                        "the code says 'BAKERY' but pays 'Corner Bakery'; check with the shop",
                    ),
                ),
                order_id="ORDER-1",
            ),
            STATIC_QR: Code(BAKERY, None),
            CHF_QR: Code(
                Merchant("mer_2", "Alpine Cafe", "Zurich", "CH"),
                Money(10_00, "CHF"),
                currency="CHF",
                fx_rate="1.0512",
            ),
            PIX_QR: Code(
                None,
                None,
                scheme="PIX",
                payable=False,
                warnings=(
                    QuoteWarning(
                        "QR_FOREIGN_SCHEME",
                        "this is a Pix code; this wallet can only pay ScanPay codes",
                    ),
                ),
            ),
            EXPIRED_QR: Code(
                BAKERY,
                Money(5_00, "EUR"),
                payable=False,
                warnings=(QuoteWarning("PAYMENT_EXPIRED", "the payment has expired"),),
            ),
            PAID_QR: Code(
                BAKERY,
                Money(5_00, "EUR"),
                payable=False,
                warnings=(QuoteWarning("PAYMENT_ALREADY_PAID", "the payment is already paid"),),
            ),
        }
        self.quotes: dict[str, tuple[Code, Money, Money]] = {}
        self.receipts: dict[str, Receipt] = {}  # idempotency key -> receipt
        self.fail_next: dict[str, list[ClientError]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.gate: dict[str, asyncio.Event] = {}  # method -> wait for this before answering
        self._ids = itertools.count(1)
        self.quote_ttl = timedelta(seconds=30)

    # scripting

    def fail(self, method: str, *errors: ClientError) -> None:
        self.fail_next.setdefault(method, []).extend(errors)

    def add_refund(self, payment_id: str, amount_minor: int, merchant: str = "Corner Bakery"):
        t = Transaction(
            id=f"txn_r{next(self._ids)}",
            kind="refund",
            amount=Money(amount_minor, self.available.currency),
            merchant_name=merchant,
            payment_id=payment_id,
            created_at=self.clock(),
        )
        self.transactions.insert(0, t)
        self.available = self.available + t.amount
        return t

    async def _enter(self, method: str, **kw: Any) -> None:
        self.calls.append((method, kw))
        gate = self.gate.get(method)
        if gate is not None:
            await gate.wait()
        queue = self.fail_next.get(method)
        if queue:
            raise queue.pop(0)

    def _authed(self) -> None:
        if self._session is None:
            raise err(SESSION_ENDED, "sign in first")

    async def _new_session(self) -> AuthSession:
        token = f"rt-{next(self._ids)}"
        self.refresh_tokens.add(token)
        self._session = AuthSession(
            access_token=f"at-{next(self._ids)}",
            refresh_token=token,
            consumer=self.consumer,
            access_expires_at=self.clock() + timedelta(minutes=15),
        )
        if self.on_session is not None:
            await self.on_session(self._session)
        return self._session

    # WalletClient

    @property
    def session(self) -> AuthSession | None:
        return self._session

    async def register(self, email, password, currency, display_name=""):
        await self._enter("register", email=email, currency=currency)
        if email == self.email:
            raise err("EMAIL_TAKEN", "an account with this e-mail exists")
        self.email = email
        self.consumer = Consumer("con_2", email, display_name, currency, 1)
        self.available = Money(0, currency)
        return await self._new_session()

    async def login(self, email, password):
        await self._enter("login", email=email)
        if email != self.email or password != PASSWORD:
            raise err("INVALID_CREDENTIALS", "wrong e-mail or password")
        return await self._new_session()

    async def resume(self, refresh_token):
        await self._enter("resume", refresh_token=refresh_token)
        if refresh_token not in self.refresh_tokens:
            raise err(SESSION_ENDED, "sign in again")
        self.refresh_tokens.discard(refresh_token)
        return await self._new_session()

    async def sign_out(self):
        self._session = None
        if self.on_session is not None:
            await self.on_session(None)

    async def get_balance(self):
        await self._enter("get_balance")
        self._authed()
        cur = self.available.currency
        return Balance(self.available, 2, Money(500_00, cur), Money(1000_00, cur), Money(0, cur))

    async def top_up(self, amount, idempotency_key):
        await self._enter("top_up", amount=amount, key=idempotency_key)
        self._authed()
        self.available = self.available + amount
        self.transactions.insert(
            0,
            Transaction(f"txn_t{next(self._ids)}", "top_up", amount, created_at=self.clock()),
        )
        return await self.get_balance()

    async def resolve_qr(self, payload, amount=None):
        await self._enter("resolve_qr", payload=payload, amount=amount)
        self._authed()
        code = self.codes.get(payload)
        if code is None:
            raise err("QR_MALFORMED", "not an EMV payment code", grpc.StatusCode.INVALID_ARGUMENT)
        base = dict(
            scheme=code.scheme,
            merchant=code.merchant,
            qr_merchant_name=code.merchant.name if code.merchant else "",
            warnings=code.warnings,
            order_id=code.order_id,
        )
        if not code.payable:
            return Quote(payable=False, initiation="dynamic", amount=code.amount, **base)
        price = code.amount if code.amount is not None else amount
        initiation = "dynamic" if code.amount is not None else "static"
        if price is None:
            return Quote(payable=True, initiation="static", amount_required=True, **base)
        if price.currency != code.currency:
            raise err("CURRENCY_MISMATCH", f"this shop takes {code.currency}")
        payer = price
        if code.fx_rate:
            from decimal import Decimal

            minor = int((Decimal(price.amount_minor) * Decimal(code.fx_rate)).to_integral_value())
            payer = Money(minor, self.available.currency)
        quote_id = f"qt_{next(self._ids)}"
        self.quotes[quote_id] = (code, price, payer)
        return Quote(
            quote_id=quote_id,
            payable=True,
            initiation=initiation,
            amount=price,
            payer_amount=payer,
            fx_rate=code.fx_rate,
            expires_at=self.clock() + self.quote_ttl,
            payment_id=f"pay_{payload[-4:]}",
            **base,
        )

    async def pay(self, *, idempotency_key, quote_id="", payload="", amount=None, reference=""):
        await self._enter("pay", key=idempotency_key, quote_id=quote_id, reference=reference)
        self._authed()
        if idempotency_key in self.receipts:
            return self.receipts[idempotency_key]
        if quote_id not in self.quotes:
            raise err("INVALID_QUOTE", "unknown quote", grpc.StatusCode.INVALID_ARGUMENT)
        code, price, payer = self.quotes[quote_id]
        if payer > self.available:
            raise err("INSUFFICIENT_FUNDS", "the wallet holds less than the amount")
        self.available = self.available - payer
        n = next(self._ids)
        receipt = Receipt(
            transaction_id=f"txn_{n}",
            payment_id=f"pay_{n}",
            merchant_name=code.merchant.name if code.merchant else "",
            amount=price,
            payer_amount=payer,
            fx_rate=code.fx_rate,
            balance_after=self.available,
            paid_at=self.clock(),
            order_id=reference or code.order_id,
        )
        self.receipts[idempotency_key] = receipt
        self.transactions.insert(
            0,
            Transaction(
                receipt.transaction_id,
                "payment",
                -payer,
                receipt.merchant_name,
                receipt.payment_id,
                receipt.paid_at,
            ),
        )
        return receipt

    async def list_transactions(self, page_size=20, page_token=""):
        await self._enter("list_transactions", page_token=page_token)
        self._authed()
        start = int(page_token or 0)
        items = self.transactions[start : start + page_size]
        more = start + page_size < len(self.transactions)
        return TransactionPage(list(items), str(start + page_size) if more else "")


class MemoryTokenStore:
    def __init__(self, token: str | None = None) -> None:
        self.token = token

    async def load(self) -> str | None:
        return self.token

    async def save(self, token: str) -> None:
        self.token = token

    async def clear(self) -> None:
        self.token = None


@dataclasses.dataclass
class FakeFrame:
    jpeg: bytes
    payloads: list[str]


class FakeCameraFeed:
    """Frames with nothing in view, then one with ``payload`` (a server camera stand-in)."""

    label = "camera 0"

    def __init__(self, payload: str, blank_frames: int = 3) -> None:
        self.payload = payload
        self.blank_frames = blank_frames
        self.watching = 0

    async def frames(self) -> AsyncIterator[FakeFrame]:
        self.watching += 1
        try:
            for _ in range(self.blank_frames):
                yield FakeFrame(b"\xff\xd8blank", [])
                await asyncio.sleep(0)
            yield FakeFrame(b"\xff\xd8code", [self.payload])
        finally:
            self.watching -= 1


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- the Flet harness -------------------------------------------------------------------------


Responder = Callable[[Any], Any]
BUTTONS = (ft.FilledButton, ft.OutlinedButton, ft.TextButton, ft.Button)


class RecordingConnection(Connection):
    """A Flet connection that serializes what the session sends (as the web transport does,
    which also keeps Flet's diff snapshots current), and answers method calls the app makes
    on browser-side services from ``responders[(control type, method)]``."""

    def __init__(self, responders: dict[tuple[str, str], Responder]) -> None:
        super().__init__()
        self.session: Session | None = None
        self.responders = responders
        self.sent: list[Message] = []
        self.invoked: list[tuple[str, str, Any]] = []
        self._encode = configure_encode_object_for_msgpack(ft.BaseControl)

    def send_message(self, message: Message) -> None:
        msgpack.packb([message.action, message.body], default=self._encode)
        self.sent.append(message)
        if message.action == MessageAction.INVOKE_METHOD:
            body = message.body
            assert self.session is not None
            control = self.session.index.get(body.control_id)
            kind = getattr(control, "_c", "?")
            self.invoked.append((kind, body.name, body.args))
            responder = self.responders.get((kind, body.name))
            session = self.session

            async def answer() -> None:
                result, error = None, None
                if responder is None:
                    error = f"no responder for {kind}.{body.name}"
                else:
                    try:
                        result = responder(body.args)
                        if asyncio.iscoroutine(result):
                            result = await result
                    except Exception as exc:
                        error = str(exc)
                session.handle_invoke_method_results(body.control_id, body.call_id, result, error)

            self.loop.create_task(answer())


class Harness:
    """The wallet in a Flet ``Session`` without a browser."""

    def __init__(self, responders: dict[tuple[str, str], Responder] | None = None) -> None:
        self.prefs: dict[str, Any] = {}
        self.picked: list[bytes] = []
        self.camera_pictures: list[bytes] = []
        defaults: dict[tuple[str, str], Responder] = {
            ("SharedPreferences", "get"): lambda a: self.prefs.get(a["key"]),
            ("SharedPreferences", "set"): lambda a: (
                self.prefs.__setitem__(a["key"], a["value"]) or True
            ),
            ("SharedPreferences", "remove"): lambda a: self.prefs.pop(a["key"], None) is not None,
            ("FilePicker", "pick_files"): self._pick,
            ("Camera", "get_available_cameras"): lambda a: [
                {"name": "front", "lens_direction": "front", "sensor_orientation": 0},
                {"name": "back", "lens_direction": "back", "sensor_orientation": 90},
            ],
            ("Camera", "initialize"): lambda a: None,
            ("Camera", "take_picture"): self._take_picture,
        }
        defaults.update(responders or {})
        self.conn = RecordingConnection(defaults)
        self.session: Session | None = None

    def _pick(self, args: Any) -> list[dict[str, Any]]:
        if not self.picked:
            return []
        data = self.picked.pop(0)
        return [{"id": 0, "name": "photo.png", "size": len(data), "bytes": data}]

    def _take_picture(self, args: Any) -> bytes:
        if len(self.camera_pictures) > 1:
            return self.camera_pictures.pop(0)
        return self.camera_pictures[0]

    async def start(self, main: Callable[[ft.Page], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        self.conn.loop = loop
        self.conn.executor = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        self.conn.pubsubhub = PubSubHub(loop=loop, executor=self.conn.executor)
        self.session = Session(self.conn)
        self.conn.session = self.session
        _context_page.set(self.session.page)
        self.session.apply_page_patch({"web": True, "route": "/", "width": 400, "height": 800})
        self.conn.send_message(
            Message(
                MessageAction.REGISTER_CLIENT,
                RegisterClientResponseBody(
                    session_id=self.session.id, page_patch=self.session.get_page_patch(), error=""
                ),
            )
        )
        result = await main(self.session.page)
        await self.settle()
        return result

    async def close(self) -> None:
        if self.session is not None:
            self.session.close()
            await asyncio.sleep(0)
        self.conn.executor.shutdown(wait=False)

    @property
    def page(self) -> ft.Page:
        assert self.session is not None
        return self.session.page

    # reading

    def controls(self) -> list[ft.BaseControl]:
        out: list[ft.BaseControl] = []
        seen: set[int] = set()

        def walk(value: Any) -> None:
            if isinstance(value, ft.BaseControl):
                if id(value) in seen:
                    return
                seen.add(id(value))
                out.append(value)
                for f in dataclasses.fields(value):
                    if f.name.startswith("_") and f.name != "_b":
                        continue
                    walk(getattr(value, f.name, None))
            elif isinstance(value, (list, tuple)):
                for item in value:
                    walk(item)

        walk(self.page.views)
        return out

    def find(self, key: str) -> Any:
        found = self.find_all(key)
        if not found:
            raise LookupError(f"no control with key {key!r}; texts: {self.texts()}")
        return found[0]

    def find_all(self, key: str) -> list[Any]:
        return [c for c in self.controls() if getattr(c, "key", None) == key]

    def has(self, key: str) -> bool:
        return bool(self.find_all(key))

    def text(self, key: str) -> str:
        c = self.find(key)
        value = getattr(c, "value", None)
        return str(value if value is not None else getattr(c, "content", ""))

    def texts(self) -> list[str]:
        out = []
        for c in self.controls():
            if isinstance(c, ft.Text) and c.value:
                out.append(str(c.value))
            elif isinstance(c, BUTTONS) and isinstance(c.content, str):
                out.append(c.content)
        return out

    def shows(self, fragment: str) -> bool:
        return any(fragment in t for t in self.texts())

    # acting

    async def click(self, key: str) -> None:
        control = self.find(key)
        if getattr(control, "disabled", False):
            raise AssertionError(f"{key!r} is disabled")
        assert self.session is not None
        await self.session.dispatch_event(control._i, "click", None)
        await self.settle()

    async def type(self, key: str, text: str) -> None:
        control = self.find(key)
        assert self.session is not None
        self.session.apply_patch(control._i, {"value": text})
        await self.session.dispatch_event(control._i, "change", text)
        await self.settle()

    async def submit(self, key: str) -> None:
        control = self.find(key)
        assert self.session is not None
        await self.session.dispatch_event(control._i, "submit", None)
        await self.settle()

    async def select(self, key: str, value: str) -> None:
        control = self.find(key)
        assert self.session is not None
        self.session.apply_patch(control._i, {"value": value})
        await self.session.dispatch_event(control._i, "select", value)
        await self.settle()

    async def settle(self, rounds: int = 20) -> None:
        """Let pending handlers, renders and effects run (no timed waits)."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) for ``predicate`` while the app's tasks run."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"timed out; the page shows {self.texts()}")
            await asyncio.sleep(0.01)


def keys_of(controls: Iterable[ft.BaseControl]) -> list[str]:
    return [str(c.key) for c in controls if getattr(c, "key", None)]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


__all__ = [
    "BAKERY",
    "CHF_QR",
    "DYNAMIC_QR",
    "EXPIRED_QR",
    "PAID_QR",
    "PASSWORD",
    "PIX_QR",
    "STATIC_QR",
    "FakeCameraFeed",
    "FakeClock",
    "FakeWalletClient",
    "Harness",
    "MemoryTokenStore",
    "err",
    "qr_png",
]
