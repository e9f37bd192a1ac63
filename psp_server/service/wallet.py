"""Use cases of the consumer side (the wallet app)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction

from sqlalchemy.exc import IntegrityError

from psp_server.adapters.store import SqlStore
from psp_server.domain import fx, ids, ledger, limits, qr
from psp_server.domain.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    Throttled,
    Unauthenticated,
    ValidationError,
)
from psp_server.domain.ledger import AccountType, EntryKind, JournalEntry
from psp_server.domain.money import Money, is_currency
from psp_server.domain.parties import Activity, Consumer, Merchant
from psp_server.domain.payments import (
    MAX_ORDER_ID,
    EventType,
    Fx,
    Payer,
    Payment,
    PaymentMethod,
    PaymentStatus,
)
from psp_server.service import auth, quotes
from psp_server.service.common import Deps, Idem, check_text, money, once, publish_after_commit
from psp_server.service.merchant import MerchantServices

# No whitespace and no control characters (PostgreSQL text cannot even hold NUL).
_EMAIL_RE = re.compile(
    r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,190}\.[^@\s\x00-\x1f\x7f]{2,63}"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# What a ScanPay QR token looks like (upper-case base32); anything else is unknown to us.
_TOKEN_RE = re.compile(r"[A-Z2-7]{1,64}")
MIN_PASSWORD = 8
MAX_PASSWORD = 128
MAX_PAYLOAD = 512


@dataclass(frozen=True, slots=True)
class SessionTokens:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    consumer: Consumer


@dataclass(frozen=True, slots=True)
class BalanceInfo:
    available: Money
    kyc_tier: int
    per_payment_limit: Money
    daily_limit: Money
    spent_today: Money


@dataclass(frozen=True, slots=True)
class QuoteWarning:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class QuoteInfo:
    quote_id: str
    payable: bool
    scheme: str
    scheme_name: str
    initiation: str | None
    merchant: Merchant | None
    qr_merchant_name: str
    amount_required: bool
    amount: Money | None
    payer_amount: Money | None
    fx_rate: str
    expires_at: datetime | None
    warnings: list[QuoteWarning] = field(default_factory=list)
    payment_id: str = ""
    order_id: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class PayCommand:
    quote_id: str = ""
    payload: str = ""
    amount_minor: int = 0
    currency: str = ""
    reference: str = ""


@dataclass(frozen=True, slots=True)
class ReceiptInfo:
    transaction_id: str
    payment_id: str
    merchant_name: str
    amount: Money
    payer_amount: Money
    fx_rate: str
    balance_after: Money
    paid_at: datetime
    order_id: str


def normalize_email(email: str) -> str:
    e = email.strip().lower()
    if not _EMAIL_RE.fullmatch(e) or len(e) > 254:
        raise ValidationError("that is not an e-mail address", reason="INVALID_EMAIL")
    return e


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(
            f"the password needs at least {MIN_PASSWORD} characters", reason="WEAK_PASSWORD"
        )
    if len(password) > MAX_PASSWORD:
        raise ValidationError("the password is too long", reason="FIELD_TOO_LONG", field="password")
    return password


class WalletServices:
    def __init__(self, deps: Deps, merchants: MerchantServices) -> None:
        self.d = deps
        self.m = merchants
        self._verified: dict[str, tuple[float, auth.ConsumerPrincipal]] = {}
        # A wallet's currency never changes: quoting needs no read of the consumer row.
        self._currencies: dict[str, str] = {}

    # -- sessions ----------------------------------------------------------------------

    def _issue(self, store: SqlStore, consumer: Consumer, now: datetime) -> SessionTokens:
        s = self.d.settings
        refresh, refresh_hash = auth.new_refresh_token()
        store.insert_refresh_token(consumer.id, refresh_hash, now + s.refresh_ttl, now)
        return SessionTokens(
            access_token=auth.issue_access_token(s.secret, consumer.id, now, s.access_ttl),
            access_expires_at=now + s.access_ttl,
            refresh_token=refresh,
            refresh_expires_at=now + s.refresh_ttl,
            consumer=consumer,
        )

    async def register(
        self, email: str, password: str, currency: str, display_name: str
    ) -> SessionTokens:
        e = normalize_email(email)
        check_password(password)
        check_text(display_name, "display_name", max_len=100)
        if not is_currency(currency):
            raise ValidationError(f"unknown currency {currency!r}", reason="UNKNOWN_CURRENCY")
        pw_hash = await asyncio.to_thread(auth.hash_password, password)

        def job(store: SqlStore) -> SessionTokens:
            now = self.d.clock.now()
            if store.get_consumer_by_email(e) is not None:
                raise Conflict("an account with this e-mail exists", reason="EMAIL_TAKEN")
            c = Consumer(
                id=ids.new_id("con"),
                email=e,
                display_name=display_name.strip() or e.split("@")[0],
                password_hash=pw_hash,
                currency=currency,
                kyc_tier=0,
                failed_logins=0,
                locked_until=None,
                created_at=now,
            )
            try:
                with store.conn.begin_nested():
                    store.insert_consumer(c)
            except IntegrityError:
                raise Conflict("an account with this e-mail exists", reason="EMAIL_TAKEN") from None
            return self._issue(store, c, now)

        return await self.d.db.write(job)

    async def login(self, email: str, password: str) -> SessionTokens:
        e = email.strip().lower()
        if len(e) > 254 or len(password) > MAX_PASSWORD or _CONTROL_RE.search(e):
            raise Unauthenticated("wrong e-mail or password", reason="INVALID_CREDENTIALS")
        consumer = await self.d.db.read(lambda s: s.get_consumer_by_email(e))
        now = self.d.clock.now()
        if consumer is not None and consumer.locked_until and consumer.locked_until > now:
            wait = int((consumer.locked_until - now).total_seconds()) + 1
            raise Throttled(
                f"too many failed sign-ins; try again in {wait} s",
                reason="LOGIN_THROTTLED",
                retry_after_seconds=str(wait),
            )
        ok = await asyncio.to_thread(
            auth.verify_password, consumer.password_hash if consumer else None, password
        )
        if consumer is None:
            raise Unauthenticated("wrong e-mail or password", reason="INVALID_CREDENTIALS")
        s = self.d.settings

        def job(store: SqlStore) -> SessionTokens | None:
            now = self.d.clock.now()
            current = store.get_consumer(consumer.id)
            assert current is not None
            if not ok:
                failed = current.failed_logins + 1
                locked = None
                if failed >= s.max_login_failures:
                    # Doubling lockout, capped at 15 minutes.
                    factor = 2 ** min(failed - s.max_login_failures, 5)
                    locked = now + min(s.login_lockout * factor, timedelta(minutes=15))
                store.set_login_state(current.id, failed, locked)
                return None
            if current.failed_logins or current.locked_until:
                store.set_login_state(current.id, 0, None)
            return self._issue(store, current, now)

        result = await self.d.db.write(job)
        if result is None:
            raise Unauthenticated("wrong e-mail or password", reason="INVALID_CREDENTIALS")
        return result

    async def refresh(self, refresh_token: str) -> SessionTokens:
        if not refresh_token or len(refresh_token) > 200:
            raise Unauthenticated("invalid refresh token", reason="INVALID_REFRESH_TOKEN")
        token_hash = auth.sha256_hex(refresh_token)

        def job(store: SqlStore) -> SessionTokens:
            now = self.d.clock.now()
            consumer_id = store.use_refresh_token(token_hash, now)
            if consumer_id is None:
                raise Unauthenticated(
                    "the session has ended; sign in again", reason="INVALID_REFRESH_TOKEN"
                )
            c = store.get_consumer(consumer_id)
            assert c is not None
            return self._issue(store, c, now)

        return await self.d.db.write(job)

    def authenticate(self, token: str) -> auth.ConsumerPrincipal:
        """Verify an access token; a verified token is remembered until it expires, so a
        wallet's burst of calls pays for one signature check."""
        now = self.d.clock.now()
        hit = self._verified.get(token)
        if hit is not None and now.timestamp() < hit[0]:
            return hit[1]
        who = auth.verify_access_token(self.d.settings.secret, token, now)
        if len(self._verified) >= 50_000:
            self._verified.clear()
        exp = now + self.d.settings.access_ttl
        self._verified[token] = (min(exp.timestamp(), auth.token_expiry(token)), who)
        return who

    # -- balance -----------------------------------------------------------------------

    def _consumer(self, store: SqlStore, who: auth.ConsumerPrincipal) -> Consumer:
        c = store.get_consumer(who.consumer_id)
        if c is None:
            raise Unauthenticated("unknown consumer", reason="INVALID_TOKEN")
        return c

    def _balance(self, store: SqlStore, c: Consumer) -> BalanceInfo:
        now = self.d.clock.now()
        bal = store.balance(ledger.wallet(c.id, c.currency))
        spent = store.spent_on(c.id, now.date().isoformat())
        return BalanceInfo(
            available=Money(bal, c.currency),
            kyc_tier=c.kyc_tier,
            per_payment_limit=limits.per_payment_limit(c.kyc_tier, c.currency),
            daily_limit=limits.daily_limit(c.kyc_tier, c.currency),
            spent_today=Money(spent, c.currency),
        )

    async def get_balance(self, who: auth.ConsumerPrincipal) -> BalanceInfo:
        return await self.d.db.read(lambda s: self._balance(s, self._consumer(s, who)))

    def top_up_in(self, store: SqlStore, c: Consumer, amount: Money, memo: str) -> None:
        now = self.d.clock.now()
        if amount.currency != c.currency:
            raise ValidationError(
                f"this wallet holds {c.currency}, not {amount.currency}", reason="CURRENCY_MISMATCH"
            )
        ceiling = limits.max_balance(c.kyc_tier, c.currency)
        current = store.balance(ledger.wallet(c.id, c.currency))
        if current + amount.amount_minor > ceiling.amount_minor:
            raise PreconditionFailed(
                f"that would take the wallet over its limit of {ceiling}",
                reason="LIMIT_EXCEEDED",
                limit="max_balance",
            )
        entry = JournalEntry(
            id=ids.new_id("txn"),
            kind=EntryKind.TOP_UP,
            memo=memo,
            postings=(
                ledger.Posting(
                    ledger.psp(AccountType.FUNDING, c.currency),
                    ledger.wallet(c.id, c.currency),
                    amount,
                ),
            ),
        )
        store.post(entry, now)
        store.insert_activity(
            Activity(
                id=ids.new_id("txn"),
                consumer_id=c.id,
                kind="top_up",
                amount_minor=amount.amount_minor,
                currency=amount.currency,
                merchant_name="",
                payment_id=None,
                description=memo,
                created_at=now,
            )
        )

    async def top_up(
        self,
        who: auth.ConsumerPrincipal,
        amount_minor: int,
        currency: str,
        idem: Idem,
        encode: Callable[[BalanceInfo], bytes],
    ) -> bytes:
        amount = money(amount_minor, currency)

        def job(store: SqlStore) -> bytes:
            now = self.d.clock.now()

            def run() -> BalanceInfo:
                c = self._consumer(store, who)
                self.top_up_in(store, c, amount, "top-up from bank account")
                return self._balance(store, c)

            return once(store, idem, now, run, encode)

        return await self.d.db.write(job)

    # -- quotes ------------------------------------------------------------------------

    def _rate(self, store: SqlStore, from_ccy: str, to_ccy: str) -> Fraction:
        """Units of ``to_ccy`` per unit of ``from_ccy``, without markup."""
        direct = store.get_rate(from_ccy, to_ccy)
        if direct is not None:
            return fx.parse_rate(direct)
        inverse = store.get_rate(to_ccy, from_ccy)
        if inverse is not None:
            return 1 / fx.parse_rate(inverse)
        raise PreconditionFailed(
            f"no exchange rate from {from_ccy} to {to_ccy}", reason="FX_RATE_UNAVAILABLE"
        )

    def _price(self, store: SqlStore, amount: Money, payer_currency: str) -> tuple[Money, str]:
        if amount.currency == payer_currency:
            return amount, ""
        rate = fx.with_markup(
            self._rate(store, amount.currency, payer_currency), self.d.settings.fx_markup_bps
        )
        rate_text = fx.format_rate(rate)
        return fx.convert(amount, fx.parse_rate(rate_text), payer_currency), rate_text

    async def resolve_qr(
        self,
        who: auth.ConsumerPrincipal,
        payload: str,
        amount_minor: int = 0,
        currency: str = "",
    ) -> QuoteInfo:
        if len(payload) > MAX_PAYLOAD:
            raise ValidationError("QR payload too long", reason="QR_TOO_LONG")
        try:
            parsed = qr.parse(payload)
        except qr.QrError as exc:
            raise ValidationError(str(exc), reason=exc.reason) from None
        typed = money(amount_minor, currency) if (amount_minor or currency) else None
        if not parsed.payable:
            return QuoteInfo(
                quote_id="",
                payable=False,
                scheme=parsed.scheme,
                scheme_name=parsed.scheme_name,
                initiation=parsed.initiation,
                merchant=None,
                qr_merchant_name=parsed.merchant_name or "",
                amount_required=False,
                amount=_qr_amount(parsed),
                payer_amount=None,
                fx_rate="",
                expires_at=None,
                warnings=[
                    QuoteWarning(
                        "QR_FOREIGN_SCHEME",
                        f"this is a {parsed.scheme_name} code; this wallet can only pay "
                        "ScanPay codes",
                    )
                ],
            )
        token = parsed.scanpay_token or ""
        if not _TOKEN_RE.fullmatch(token):
            raise NotFound("this QR code is not known to ScanPay", reason="QR_UNKNOWN")

        def q(store: SqlStore) -> QuoteInfo:
            now = self.d.clock.now()
            payer_currency = self._currencies.get(who.consumer_id)
            if payer_currency is None:
                payer_currency = self._consumer(store, who).currency
                if len(self._currencies) >= 100_000:
                    self._currencies.clear()
                self._currencies[who.consumer_id] = payer_currency
            s = self.d.settings
            warnings: list[QuoteWarning] = []
            p = store.get_payment_by_token(token) if parsed.initiation == "dynamic" else None
            static = None if p is not None else store.get_static_qr(token)
            if p is None and static is None:
                raise NotFound("this QR code is not known to ScanPay", reason="QR_UNKNOWN")
            merchant = self.m.merchant(store, p.merchant_id if p else static.merchant_id)  # type: ignore[union-attr]
            if parsed.merchant_name and not qr.names_match(merchant.name, parsed.merchant_name):
                warnings.append(
                    QuoteWarning(
                        "QR_NAME_MISMATCH",
                        f"the code says {parsed.merchant_name!r} but pays {merchant.name!r}; "
                        "check with the shop before paying",
                    )
                )
            base = dict(
                scheme=parsed.scheme,
                scheme_name=parsed.scheme_name,
                initiation=parsed.initiation,
                merchant=merchant,
                qr_merchant_name=parsed.merchant_name or "",
            )
            if p is not None:
                amount = p.amount
                try:
                    printed = parsed.amount()
                except qr.QrError:
                    printed = None
                if printed is not None and printed != amount:
                    warnings.append(
                        QuoteWarning(
                            "QR_AMOUNT_MISMATCH",
                            f"the code shows {printed} but the shop asks {amount}",
                        )
                    )
                try:
                    p.check_payable(now)
                except PreconditionFailed as exc:
                    warnings.append(QuoteWarning(exc.reason, exc.message))
                    return QuoteInfo(
                        quote_id="",
                        payable=False,
                        amount_required=False,
                        amount=amount,
                        payer_amount=None,
                        fx_rate="",
                        expires_at=p.expires_at,
                        warnings=warnings,
                        payment_id=p.id,
                        order_id=p.order_id,
                        description=p.description,
                        **base,  # type: ignore[arg-type]
                    )
            else:
                if typed is None:
                    return QuoteInfo(
                        quote_id="",
                        payable=True,
                        amount_required=True,
                        amount=None,
                        payer_amount=None,
                        fx_rate="",
                        expires_at=None,
                        warnings=warnings,
                        **base,  # type: ignore[arg-type]
                    )
                if typed.currency != merchant.currency:
                    raise ValidationError(
                        f"this shop takes {merchant.currency}; enter the amount in "
                        f"{merchant.currency}",
                        reason="CURRENCY_MISMATCH",
                    )
                amount = typed
            payer_amount, rate = self._price(store, amount, payer_currency)
            ttl = s.fx_quote_ttl if rate else s.quote_ttl
            expires = now + ttl
            if p is not None and p.expires_at is not None:
                expires = min(expires, p.expires_at)
            qd = quotes.QuoteData(
                consumer_id=who.consumer_id,
                merchant_id=merchant.id,
                payment_id=p.id if p else "",
                static_token="" if p else token,
                amount_minor=amount.amount_minor,
                currency=amount.currency,
                payer_amount_minor=payer_amount.amount_minor,
                payer_currency=payer_amount.currency,
                rate=rate,
                expires_at=int(expires.timestamp()),
            )
            return QuoteInfo(
                quote_id=quotes.sign(s.secret, qd),
                payable=True,
                amount_required=False,
                amount=amount,
                payer_amount=payer_amount,
                fx_rate=rate,
                expires_at=datetime.fromtimestamp(qd.expires_at, expires.tzinfo),
                warnings=warnings,
                payment_id=p.id if p else "",
                order_id=p.order_id if p else "",
                description=p.description if p else "",
                **base,  # type: ignore[arg-type]
            )

        return await self.d.db.read(q)

    # -- pay ---------------------------------------------------------------------------

    async def pay(
        self,
        who: auth.ConsumerPrincipal,
        cmd: PayCommand,
        idem: Idem,
        encode: Callable[[ReceiptInfo], bytes],
    ) -> bytes:
        check_text(cmd.reference, "reference", max_len=MAX_ORDER_ID)
        qd: quotes.QuoteData | None = None
        token = ""
        typed: Money | None = None
        if cmd.quote_id:
            # Genuine and this consumer's; its age is checked only when the payment
            # runs, not for a replay (which returns the receipt stored back then).
            qd = quotes.open_quote(self.d.settings.secret, cmd.quote_id, who.consumer_id)
        elif cmd.payload:
            if len(cmd.payload) > MAX_PAYLOAD:
                raise ValidationError("QR payload too long", reason="QR_TOO_LONG")
            try:
                parsed = qr.parse(cmd.payload)
            except qr.QrError as exc:
                raise ValidationError(str(exc), reason=exc.reason) from None
            if not parsed.payable:
                raise PreconditionFailed(
                    f"this is a {parsed.scheme_name} code; this wallet can only pay ScanPay codes",
                    reason="QR_FOREIGN_SCHEME",
                )
            if parsed.initiation == "dynamic":
                raise ValidationError(
                    "resolve a dynamic QR first and pay its quote_id", reason="QUOTE_REQUIRED"
                )
            token = parsed.scanpay_token or ""
            if not _TOKEN_RE.fullmatch(token):
                raise NotFound("this QR code is not known to ScanPay", reason="QR_UNKNOWN")
            if not cmd.amount_minor and not cmd.currency:
                raise ValidationError(
                    "enter the amount for this shop's QR code", reason="AMOUNT_REQUIRED"
                )
            typed = money(cmd.amount_minor, cmd.currency)
        else:
            raise ValidationError("quote_id or payload is required", reason="MISSING_FIELD")

        def job(store: SqlStore) -> bytes:
            now = self.d.clock.now()

            def run() -> ReceiptInfo:
                if qd is not None:
                    quotes.check_fresh(qd, now)
                c = self._consumer(store, who)
                if qd is not None and qd.payment_id:
                    p = store.get_payment(qd.payment_id, for_update=True)
                    if p is None:
                        raise NotFound("payment not found", reason="PAYMENT_NOT_FOUND")
                    merchant = self.m.merchant(store, p.merchant_id)
                    p.check_payable(now)
                    amount = p.amount
                    payer_amount = Money(qd.payer_amount_minor, qd.payer_currency)
                    rate = qd.rate
                    fx_until = datetime.fromtimestamp(qd.expires_at, now.tzinfo)
                    is_new = False
                else:
                    static_token = qd.static_token if qd is not None else token
                    sq = store.get_static_qr(static_token)
                    if sq is None:
                        raise NotFound("this QR code is not known to ScanPay", reason="QR_UNKNOWN")
                    merchant = self.m.merchant(store, sq.merchant_id)
                    if qd is not None:
                        amount = Money(qd.amount_minor, qd.currency)
                        payer_amount = Money(qd.payer_amount_minor, qd.payer_currency)
                        rate = qd.rate
                        fx_until = datetime.fromtimestamp(qd.expires_at, now.tzinfo)
                    else:
                        assert typed is not None
                        if typed.currency != merchant.currency:
                            raise ValidationError(
                                f"this shop takes {merchant.currency}", reason="CURRENCY_MISMATCH"
                            )
                        amount = typed
                        payer_amount, rate = self._price(store, amount, c.currency)
                        fx_until = now
                    label = ""
                    if sq.terminal_id:
                        term = store.get_terminal(sq.terminal_id)
                        label = term.label if term else ""
                    p = Payment(
                        id=ids.new_id("pay"),
                        merchant_id=merchant.id,
                        terminal_id=sq.terminal_id,
                        terminal_label=label,
                        method=PaymentMethod.QR_STATIC,
                        status=PaymentStatus.PENDING,
                        order_id=cmd.reference or f"STATIC-{now.strftime('%H%M%S')}",
                        amount=amount,
                        description="",
                        created_at=now,
                        updated_at=now,
                        payer_reference=cmd.reference,
                    )
                    is_new = True
                if payer_amount.currency != c.currency:
                    raise PreconditionFailed(
                        "the quote was made for another wallet currency", reason="INVALID_QUOTE"
                    )
                day = now.date().isoformat()
                limits.check_payment(
                    c.kyc_tier, payer_amount, Money(store.spent_on(c.id, day), c.currency)
                )
                fee = amount.percent_bps(
                    merchant_bps(merchant, self.d.settings.default_discount_bps)
                )
                entry = JournalEntry(
                    id=ids.new_id("txn"),
                    kind=EntryKind.PAYMENT,
                    payment_id=p.id,
                    memo=f"payment {p.id} order {p.order_id}"[:200],
                    postings=ledger.payment_postings(
                        payer=ledger.wallet(c.id, c.currency),
                        payer_amount=payer_amount,
                        merchant_account=ledger.merchant(merchant.id, merchant.currency),
                        amount=amount,
                        fee=fee,
                    ),
                )
                # Raises INSUFFICIENT_FUNDS before anything sticks.
                balances = store.post(entry, now)
                version = p.version
                p.succeed(
                    now,
                    Payer(c.id, payer_amount),
                    fee,
                    Fx(payer_amount, rate, fx_until) if rate else None,
                )
                # PostgreSQL: the day's spend, the activity and the event go in one trip.
                with store.deferring():
                    data = store.insert_payment(p) if is_new else store.update_payment(p, version)
                    store.add_spent(c.id, day, payer_amount.amount_minor)
                    store.insert_activity(
                        Activity(
                            id=entry.id,
                            consumer_id=c.id,
                            kind="payment",
                            amount_minor=-payer_amount.amount_minor,
                            currency=payer_amount.currency,
                            merchant_name=merchant.name,
                            payment_id=p.id,
                            description=p.description or f"order {p.order_id}",
                            created_at=now,
                        )
                    )
                    ev = store.append_event(p.merchant_id, EventType.SUCCEEDED.value, p, now, data)
                publish_after_commit(store, self.d.bus, ev)
                return ReceiptInfo(
                    transaction_id=entry.id,
                    payment_id=p.id,
                    merchant_name=merchant.name,
                    amount=amount,
                    payer_amount=payer_amount,
                    fx_rate=rate,
                    balance_after=Money(balances[ledger.wallet(c.id, c.currency)], c.currency),
                    paid_at=now,
                    order_id=p.order_id,
                )

            return once(store, idem, now, run, encode)

        return await self.d.db.write(job)

    async def list_transactions(
        self, who: auth.ConsumerPrincipal, page_size: int, page_token: str
    ) -> tuple[list[Activity], str]:
        size = page_size or 50
        if not 1 <= size <= 200:
            raise ValidationError("page_size must be 1..200", reason="INVALID_PAGE_SIZE")
        if page_token and not ids.looks_like("txn", page_token):
            raise ValidationError("malformed page_token", reason="INVALID_PAGE_TOKEN")
        rows = await self.d.db.read(
            lambda s: s.list_activity(who.consumer_id, page_token or None, size + 1)
        )
        nxt = ""
        if len(rows) > size:
            rows = rows[:size]
            nxt = rows[-1].id
        return rows, nxt


def merchant_bps(merchant: Merchant, default: int) -> int:
    return merchant.discount_rate_bps if merchant.discount_rate_bps >= 0 else default


def _qr_amount(parsed: qr.ParsedQr) -> Money | None:
    try:
        return parsed.amount()
    except (qr.QrError, ValueError):
        return None
