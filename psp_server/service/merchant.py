"""Use cases of the merchant side (cashier terminals)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from psp_server.adapters.store import SqlStore
from psp_server.domain import ids, ledger, qr
from psp_server.domain.errors import NotFound, ValidationError
from psp_server.domain.ledger import EntryKind, JournalEntry
from psp_server.domain.money import Money
from psp_server.domain.parties import Activity, Event, Merchant
from psp_server.domain.payments import (
    DEFAULT_EXPIRY,
    MAX_DESCRIPTION,
    MAX_EXPIRY,
    MAX_ORDER_ID,
    MAX_REASON,
    MIN_EXPIRY,
    EventType,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    fee_refund_for,
    payer_refund_for,
)
from psp_server.service.auth import MerchantPrincipal
from psp_server.service.common import Deps, Idem, check_text, money, once, publish_after_commit


@dataclass(frozen=True, slots=True)
class CreatePayment:
    order_id: str
    amount_minor: int
    currency: str
    description: str = ""
    expires_in_seconds: int = 0


@dataclass(frozen=True, slots=True)
class RefundPayment:
    payment_id: str
    amount_minor: int
    currency: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    page_size: int = 50
    page_token: str = ""
    statuses: list[PaymentStatus] = field(default_factory=list)
    created_from: datetime | None = None
    created_to: datetime | None = None
    order_id: str = ""
    method: PaymentMethod | None = None


@dataclass(frozen=True, slots=True)
class StaticQrInfo:
    payload: str
    pay_url: str
    merchant_name: str
    terminal_label: str


@dataclass(frozen=True, slots=True)
class MethodTotal:
    method: PaymentMethod
    count: int
    gross: Money


@dataclass(frozen=True, slots=True)
class DailySummary:
    date: str
    totals: list[MethodTotal]
    gross: Money
    refunds: Money
    fees: Money
    net: Money
    payment_count: int
    refund_count: int


def pay_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/p/{token}"


def static_payload(merchant: Merchant, token: str, terminal_label: str) -> str:
    return qr.encode_scanpay(
        dynamic=False,
        merchant_code=merchant.code,
        token=token,
        mcc=merchant.mcc,
        amount=None,
        currency=merchant.currency,
        country=merchant.country,
        name=merchant.name,
        city=merchant.city,
        terminal_label=terminal_label or None,
    )


class MerchantServices:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self._merchants: dict[str, Merchant] = {}

    # -- helpers -----------------------------------------------------------------------

    def merchant(self, store: SqlStore, merchant_id: str) -> Merchant:
        m = self._merchants.get(merchant_id)
        if m is None:
            m = store.get_merchant(merchant_id)
            if m is None:
                raise NotFound("merchant not found", reason="MERCHANT_NOT_FOUND")
            self._merchants[merchant_id] = m
        return m

    def _own_payment(
        self, store: SqlStore, who: MerchantPrincipal, payment_id: str, *, for_update: bool = False
    ) -> Payment:
        if not ids.looks_like("pay", payment_id):
            raise ValidationError("malformed payment_id", reason="INVALID_PAYMENT_ID")
        p = store.get_payment(payment_id, for_update=for_update)
        if p is None or p.merchant_id != who.merchant_id:
            # Another merchant's payment is as good as absent.
            raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
        return p

    def _event(
        self, store: SqlStore, p: Payment, type_: EventType, now: datetime, data: str = ""
    ) -> Event:
        ev = store.append_event(p.merchant_id, type_.value, p, now, data or None)
        publish_after_commit(store, self.d.bus, ev)
        return ev

    # -- use cases ---------------------------------------------------------------------

    async def get_merchant(self, who: MerchantPrincipal) -> Merchant:
        cached = self._merchants.get(who.merchant_id)
        if cached is not None:
            return cached
        return await self.d.db.read(lambda s: self.merchant(s, who.merchant_id))

    async def create_payment(
        self,
        who: MerchantPrincipal,
        cmd: CreatePayment,
        idem: Idem,
        encode: Callable[[Payment], bytes],
    ) -> bytes:
        check_text(cmd.order_id, "order_id", max_len=MAX_ORDER_ID, required=True)
        check_text(cmd.description, "description", max_len=MAX_DESCRIPTION)
        amount = money(cmd.amount_minor, cmd.currency)
        if cmd.expires_in_seconds < 0:
            raise ValidationError(
                "expires_in_seconds must not be negative", reason="INVALID_EXPIRY"
            )
        ttl = (
            timedelta(seconds=cmd.expires_in_seconds) if cmd.expires_in_seconds else DEFAULT_EXPIRY
        )
        if not MIN_EXPIRY <= ttl <= MAX_EXPIRY:
            raise ValidationError(
                f"expiry must be between {int(MIN_EXPIRY.total_seconds())} s and "
                f"{int(MAX_EXPIRY.total_seconds())} s",
                reason="INVALID_EXPIRY",
            )

        def job(store: SqlStore) -> bytes:
            now = self.d.clock.now()
            merchant = self.merchant(store, who.merchant_id)
            if amount.currency != merchant.currency:
                raise ValidationError(
                    f"this merchant takes {merchant.currency}, not {amount.currency}",
                    reason="CURRENCY_MISMATCH",
                )

            def run() -> Payment:
                token = ids.new_token(20)
                bill = cmd.order_id if qr.is_qr_alnum(cmd.order_id) else None
                payload = qr.encode_scanpay(
                    dynamic=True,
                    merchant_code=merchant.code,
                    token=token,
                    mcc=merchant.mcc,
                    amount=amount,
                    country=merchant.country,
                    name=merchant.name,
                    city=merchant.city,
                    bill_number=bill,
                    terminal_label=who.terminal_label
                    if qr.is_qr_alnum(who.terminal_label)
                    else None,
                )
                p = Payment(
                    id=ids.new_id("pay"),
                    merchant_id=merchant.id,
                    terminal_id=who.terminal_id,
                    terminal_label=who.terminal_label,
                    method=PaymentMethod.QR_DYNAMIC,
                    status=PaymentStatus.PENDING,
                    order_id=cmd.order_id,
                    amount=amount,
                    description=cmd.description,
                    created_at=now,
                    updated_at=now,
                    expires_at=now + ttl,
                    qr_token=token,
                    qr_payload=payload,
                )
                with store.deferring():  # PostgreSQL: one round trip for both
                    data = store.insert_payment(p)
                    self._event(store, p, EventType.CREATED, now, data)
                return p

            return once(store, idem, now, run, encode)

        return await self.d.db.write(job)

    async def get_payment(self, who: MerchantPrincipal, payment_id: str) -> Payment:
        p = await self.d.db.read(lambda s: self._own_payment(s, who, payment_id))
        return self.present(p)

    def present(self, p: Payment) -> Payment:
        """The payment as it is now: a pending QR past its expiry shows EXPIRED even
        before the sweeper has recorded it."""
        if p.is_expired_at(self.d.clock.now()):
            p = p.copy()
            p.status = PaymentStatus.EXPIRED
        return p

    async def cancel_payment(
        self,
        who: MerchantPrincipal,
        payment_id: str,
        idem: Idem,
        encode: Callable[[Payment], bytes],
    ) -> bytes:
        def job(store: SqlStore) -> bytes:
            now = self.d.clock.now()

            def run() -> Payment:
                p = self._own_payment(store, who, payment_id, for_update=True)
                version = p.version
                p.cancel(now)
                store.update_payment(p, version)
                self._event(store, p, EventType.CANCELED, now)
                return p

            return once(store, idem, now, run, encode)

        return await self.d.db.write(job)

    async def list_payments(
        self, who: MerchantPrincipal, f: PaymentFilter
    ) -> tuple[list[Payment], str]:
        size = f.page_size or 50
        if not 1 <= size <= 200:
            raise ValidationError("page_size must be 1..200", reason="INVALID_PAGE_SIZE")
        check_text(f.order_id, "order_id", max_len=MAX_ORDER_ID)
        before = _decode_page_token(f.page_token) if f.page_token else None

        def q(store: SqlStore) -> list[Payment]:
            return store.list_payments(
                who.merchant_id,
                limit=size + 1,
                before=before,
                statuses=f.statuses,
                created_from=f.created_from,
                created_to=f.created_to,
                order_id=f.order_id or None,
                method=f.method,
            )

        rows = await self.d.db.read(q)
        nxt = ""
        if len(rows) > size:
            rows = rows[:size]
            nxt = _encode_page_token(rows[-1].created_at, rows[-1].id)
        return [self.present(p) for p in rows], nxt

    async def refund_payment(
        self,
        who: MerchantPrincipal,
        cmd: RefundPayment,
        idem: Idem,
        encode: Callable[[Payment], bytes],
    ) -> bytes:
        amount = money(cmd.amount_minor, cmd.currency)
        check_text(cmd.reason, "reason", max_len=MAX_REASON)

        def job(store: SqlStore) -> bytes:
            now = self.d.clock.now()

            def run() -> Payment:
                p = self._own_payment(store, who, cmd.payment_id, for_update=True)
                if p.method is PaymentMethod.CARD:
                    from psp_server.domain.errors import NotImplementedYet

                    raise NotImplementedYet(
                        "card refunds go through the card rail, which is not available yet",
                        reason="CARD_RAIL_UNAVAILABLE",
                    )
                version = p.version
                if p.payer is None:
                    from psp_server.domain.errors import PreconditionFailed

                    raise PreconditionFailed(
                        f"payment is {p.status.value}; only a paid payment can be refunded",
                        reason="PAYMENT_NOT_REFUNDABLE",
                    )
                fee_back = (
                    fee_refund_for(p, amount) if amount.currency == p.amount.currency else None
                )
                payer_back = (
                    payer_refund_for(p, amount) if amount.currency == p.amount.currency else None
                )
                refund = Refund(
                    id=ids.new_id("ref"),
                    amount=amount,
                    payer_amount=payer_back or amount,
                    fee_refund=fee_back or Money.zero(amount.currency),
                    reason=cmd.reason,
                    created_at=now,
                )
                p.add_refund(refund, now)  # checks state, currency and the refundable amount
                merchant = self.merchant(store, p.merchant_id)
                entry = JournalEntry(
                    id=ids.new_id("txn"),
                    kind=EntryKind.REFUND,
                    payment_id=p.id,
                    memo=f"refund {refund.id} of {p.id}",
                    postings=ledger.refund_postings(
                        payer=ledger.wallet(p.payer.consumer_id, refund.payer_amount.currency),
                        payer_refund=refund.payer_amount,
                        merchant_account=ledger.merchant(merchant.id, merchant.currency),
                        amount=amount,
                        fee_refund=refund.fee_refund,
                    ),
                )
                store.post(entry, now)
                store.update_payment(p, version)
                store.insert_activity(
                    Activity(
                        id=ids.new_id("txn"),
                        consumer_id=p.payer.consumer_id,
                        kind="refund",
                        amount_minor=refund.payer_amount.amount_minor,
                        currency=refund.payer_amount.currency,
                        merchant_name=merchant.name,
                        payment_id=p.id,
                        description=cmd.reason or f"refund for order {p.order_id}",
                        created_at=now,
                    )
                )
                self._event(store, p, EventType.REFUNDED, now)
                return p

            return once(store, idem, now, run, encode)

        return await self.d.db.write(job)

    async def get_static_qr(self, who: MerchantPrincipal) -> StaticQrInfo:
        def q(store: SqlStore) -> StaticQrInfo:
            merchant = self.merchant(store, who.merchant_id)
            sq = store.get_static_qr_for(merchant.id, who.terminal_id)
            label = who.terminal_label
            if sq is None:
                sq = store.get_static_qr_for(merchant.id, None)
                label = ""
            if sq is None:
                raise NotFound("this merchant has no static QR", reason="STATIC_QR_NOT_FOUND")
            return StaticQrInfo(
                payload=static_payload(merchant, sq.token, label),
                pay_url=pay_url(self.d.settings.public_base_url, sq.token),
                merchant_name=merchant.name,
                terminal_label=label,
            )

        return await self.d.db.read(q)

    async def daily_summary(self, who: MerchantPrincipal, day_text: str) -> DailySummary:
        try:
            day = date.fromisoformat(day_text) if day_text else self.d.clock.now().date()
            start = datetime.combine(day, time(0), tzinfo=UTC)
            end = start + timedelta(days=1)
            refunds_since = start - timedelta(days=180)
        except (ValueError, OverflowError):  # OverflowError: the first or last days of time
            raise ValidationError("date must be YYYY-MM-DD", reason="INVALID_DATE") from None

        def q(store: SqlStore) -> DailySummary:
            merchant = self.merchant(store, who.merchant_id)
            cur = merchant.currency
            paid = store.payments_paid_between(merchant.id, start, end)
            totals: dict[PaymentMethod, tuple[int, int]] = {}
            gross = fees = 0
            for p in paid:
                if p.amount.currency != cur:
                    continue
                c, g = totals.get(p.method, (0, 0))
                totals[p.method] = (c + 1, g + p.amount.amount_minor)
                gross += p.amount.amount_minor
                fees += p.fee.amount_minor if p.fee else 0
            refunds = refund_count = 0
            for p in store.payments_with_refunds_for(merchant.id, refunds_since):
                for r in p.refunds:
                    if start <= r.created_at < end:
                        refunds += r.amount.amount_minor
                        fees -= r.fee_refund.amount_minor
                        refund_count += 1
            return DailySummary(
                date=day.isoformat(),
                totals=[MethodTotal(m, c, Money(g, cur)) for m, (c, g) in sorted(totals.items())],
                gross=Money(gross, cur),
                refunds=Money(refunds, cur),
                fees=Money(fees, cur),
                net=Money(gross - refunds - fees, cur),
                payment_count=len(paid),
                refund_count=refund_count,
            )

        return await self.d.db.read(q)

    # -- events ------------------------------------------------------------------------

    async def read_events(self, merchant_id: str, after_seq: int, limit: int = 500) -> list[Event]:
        return await self.d.db.read(lambda s: s.read_events(merchant_id, after_seq, limit))

    async def last_event_seq(self, merchant_id: str) -> int:
        return await self.d.db.read(lambda s: s.last_event_seq(merchant_id))

    # -- expiry ------------------------------------------------------------------------

    async def expire_due(self, limit: int = 500) -> int:
        """Record EXPIRED (with its event) for pending QRs past their expiry."""
        now = self.d.clock.now()
        due = await self.d.db.read(lambda s: s.due_for_expiry(now, limit))
        if not due:
            return 0

        def job(store: SqlStore) -> int:
            n = 0
            at = self.d.clock.now()
            for pid in due:
                p = store.get_payment(pid, for_update=True)
                if p is None or not p.is_expired_at(at):
                    continue
                version = p.version
                p.expire(at)
                store.update_payment(p, version)
                self._event(store, p, EventType.EXPIRED, at)
                n += 1
            return n

        return await self.d.db.write(job)


def _encode_page_token(at: datetime, pid: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{pid}".encode()).decode()


def _decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        at, pid = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None or not ids.looks_like("pay", pid):
            raise ValueError
        return parsed, pid
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("malformed page_token", reason="INVALID_PAGE_TOKEN") from None
