"""The card rail: swipe (sale or authorization), capture, void, refund, batch close,
chargebacks and disputes.

Network I/O never happens inside a database job. Each call is: job 1 records the intent
(with the request's trace, so that a crash can be reversed), the network call, job 2
records the outcome with its ledger entry, event and idempotency record.

PCI DSS: track data and the clear PAN live only in memory for the length of the call;
rows hold the vault's ciphertext, a keyed fingerprint and the masked number. Nothing here
logs card data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from psp_server.adapters.card_store import CardStore, Row, SqlReversalQueue
from psp_server.adapters.cardnet_client import (
    BatchTotals,
    CardData,
    CardNetworkClient,
    CardNetworkError,
    CardNetworkTimeout,
    CardNetworkUnavailable,
    CardResponse,
    Chargeback,
    OriginalRef,
    PendingReversal,
    ReversalStatus,
    Trace,
)
from psp_server.adapters.pan_vault import PanVault
from psp_server.adapters.store import SqlStore
from psp_server.cardnet import spec
from psp_server.cardnet.settlement import SettlementRow, parse_csv
from psp_server.domain import ids
from psp_server.domain.cards import CardError, parse_swipe, response_code
from psp_server.domain.errors import (
    IdempotencyKeyReused,
    NotFound,
    PreconditionFailed,
    Unavailable,
    ValidationError,
)
from psp_server.domain.ledger import (
    AccountRef,
    AccountType,
    EntryKind,
    JournalEntry,
    Posting,
    merchant,
    psp,
)
from psp_server.domain.money import Money
from psp_server.domain.payments import (
    MAX_ORDER_ID,
    MAX_REASON,
    CardInfo,
    EventType,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    fee_refund_for,
)
from psp_server.service.auth import MerchantPrincipal
from psp_server.service.common import Deps, Idem, check_text, money, once
from psp_server.service.merchant import MerchantServices, RefundPayment
from psp_server.service.wallet import merchant_bps

log = logging.getLogger(__name__)

CARD_RAIL_UNAVAILABLE = "CARD_RAIL_UNAVAILABLE"
MAX_EVIDENCE = 2000


class CardAction:
    SALE = "sale"
    AUTHORIZE = "authorize"


@dataclass(frozen=True, slots=True)
class SwipeCard:
    track_data: str
    amount_minor: int
    currency: str
    order_id: str
    action: str  # CardAction


@dataclass(frozen=True, slots=True)
class BatchInfo:
    id: str
    count: int
    gross: Money
    interchange: Money
    scheme_fees: Money
    net: Money
    closed_at: datetime
    settlement_file: str


@dataclass(frozen=True, slots=True)
class Dispute:
    id: str
    payment_id: str
    merchant_id: str
    network_transaction_id: str
    amount: Money
    reason_code: str
    status: str
    evidence: str
    created_at: datetime


# -- ledger shapes ---------------------------------------------------------------------


def _holds(cur: str) -> AccountRef:
    return psp(AccountType.CARD_HOLDS, cur)


def _holds_payable(merchant_id: str, cur: str) -> AccountRef:
    return AccountRef(AccountType.CARD_HOLDS_PAYABLE, merchant_id, cur)


def _pending(merchant_id: str, cur: str) -> AccountRef:
    return AccountRef(AccountType.MERCHANT_PENDING, merchant_id, cur)


def _receivable(cur: str) -> AccountRef:
    return psp(AccountType.CARD_RECEIVABLE, cur)


def _fees(cur: str) -> AccountRef:
    return psp(AccountType.CARD_FEES, cur)


def hold_entry(p: Payment) -> JournalEntry:
    """The authorization hold: pending until captured, voided or expired."""
    cur = p.amount.currency
    return JournalEntry(
        id=ids.new_id("txn"),
        kind=EntryKind.CARD_HOLD,
        payment_id=p.id,
        memo=f"card hold {p.id}",
        postings=(Posting(_holds(cur), _holds_payable(p.merchant_id, cur), p.amount),),
    )


def release_entry(p: Payment, held: Money, why: str) -> JournalEntry:
    cur = held.currency
    return JournalEntry(
        id=ids.new_id("txn"),
        kind=EntryKind.REVERSAL,
        payment_id=p.id,
        memo=f"card hold {p.id} released ({why})",
        postings=(Posting(_holds_payable(p.merchant_id, cur), _holds(cur), held),),
    )


def capture_postings(merchant_id: str, amount: Money, fee: Money) -> tuple[Posting, ...]:
    """Captured: the network owes us the amount; the merchant is owed it less our
    markup, once the batch settles."""
    cur = amount.currency
    out = [Posting(_receivable(cur), _pending(merchant_id, cur), amount)]
    if fee.amount_minor:
        out.append(Posting(_pending(merchant_id, cur), psp(AccountType.FEE_REVENUE, cur), fee))
    return tuple(out)


class CardServices:
    def __init__(
        self,
        deps: Deps,
        merchants: MerchantServices,
        client: CardNetworkClient,
        vault: PanVault,
        settlement_dir: Path | None = None,
        reversals: SqlReversalQueue | None = None,
    ) -> None:
        self.d = deps
        self.m = merchants
        self.client = client
        self.vault = vault
        self.settlement_dir = settlement_dir
        self.reversals = reversals
        self.disputes = DisputeServices(deps, merchants, client)
        # Requests recorded before this instant were left by an earlier run (recovery).
        self.started_at = self._now()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- helpers -----------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.d.clock.now()

    def _ref(self, row: Row) -> OriginalRef:
        return OriginalRef(
            row["mti"],
            Trace(row["stan"], row["transmitted_at"]),
            row["merchant_id"],
            row["terminal_id"],
            Money(row["amount_minor"], row["currency"]),
            spec.PROC_PURCHASE,
        )

    def _card_payment(
        self, store: SqlStore, who: MerchantPrincipal, payment_id: str
    ) -> tuple[Payment, Row]:
        if not ids.looks_like("pay", payment_id):
            raise ValidationError("malformed payment_id", reason="INVALID_PAYMENT_ID")
        p = store.get_payment(payment_id, for_update=True)
        if p is None or p.merchant_id != who.merchant_id:
            raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
        row = CardStore(store).get_card(payment_id)
        if p.method is not PaymentMethod.CARD or row is None:
            raise PreconditionFailed(
                "this is not a card payment", reason="NOT_A_CARD_PAYMENT", payment_id=p.id
            )
        return p, row

    async def _reversals_persisted(self) -> None:
        """Wait until every reversal the client queued is in the database."""
        if self.reversals is not None:
            await self.reversals.flush()

    def _after_cancel(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A cancelled call (the client gave up) cannot await its clean-up: run it in a
        task of its own, kept referenced until done."""
        task = asyncio.get_running_loop().create_task(job())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait for background clean-ups and reversal writes (before shutting down)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._reversals_persisted()

    @staticmethod
    def _replay(store: SqlStore, idem: Idem) -> bytes | None:
        hit = store.get_idempotency(idem.scope, idem.key)
        if hit is None:
            return None
        if hit[0] != idem.request_hash:
            raise IdempotencyKeyReused(
                "this idempotency key was already used for a different request",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return hit[1]

    @staticmethod
    def _unavailable(exc: CardNetworkError, what: str) -> Unavailable:
        if isinstance(exc, CardNetworkTimeout) and exc.reversal is None:
            return Unavailable(
                f"no answer from the card network for the {what}; retry with the same key",
                reason=exc.reason,
            )
        if isinstance(exc, CardNetworkTimeout):
            assert exc.reversal is not None
            done = exc.reversal.status is not ReversalStatus.QUEUED
            tail = (
                "it was reversed; nothing was charged"
                if done
                else "its reversal is queued and will be sent when the network is back"
            )
            return Unavailable(
                f"no answer from the card network for the {what}; {tail}; try again",
                reason=exc.reason,
            )
        return Unavailable(
            f"the card network is unavailable; the {what} was not sent; try again",
            reason=exc.reason,
        )

    # -- swipe -------------------------------------------------------------------------

    async def swipe(
        self,
        who: MerchantPrincipal,
        cmd: SwipeCard,
        idem: Idem,
        encode: Callable[[Payment], bytes],
    ) -> bytes:
        check_text(cmd.order_id, "order_id", max_len=MAX_ORDER_ID, required=True)
        amount = money(cmd.amount_minor, cmd.currency)
        if cmd.action not in (CardAction.SALE, CardAction.AUTHORIZE):
            raise ValidationError("action must be SALE or AUTHORIZE", reason="INVALID_ACTION")
        try:
            swipe = parse_swipe(cmd.track_data, self._now())
        except CardError as exc:  # messages never contain card data
            raise ValidationError(exc.message, reason=exc.reason) from None
        mti = spec.AUTH_REQUEST if cmd.action == CardAction.AUTHORIZE else spec.FINANCIAL_REQUEST
        trace = self.client.new_trace()
        payment_id = ids.new_id("pay")
        ciphertext = self.vault.encrypt(swipe.pan)
        fingerprint = self.vault.fingerprint(swipe.pan)
        masked, brand = swipe.masked, swipe.brand.value
        card = CardData.from_swipe(swipe)
        terminal_id = who.terminal_id

        def intent(store: SqlStore) -> bytes | None:
            now = self._now()
            m = self.m.merchant(store, who.merchant_id)
            if amount.currency != m.currency:
                raise ValidationError(
                    f"this merchant takes {m.currency}, not {amount.currency}",
                    reason="CURRENCY_MISMATCH",
                )
            blob = self._replay(store, idem)
            if blob is not None:
                return blob
            cs = CardStore(store)
            busy = cs.card_by_idem(idem.scope, idem.key)
            if busy is not None:
                if busy["request_hash"] != idem.request_hash:
                    raise IdempotencyKeyReused(
                        "this idempotency key was already used for a different request",
                        reason="IDEMPOTENCY_KEY_REUSED",
                    )
                raise Unavailable(
                    "this request is still in progress; retry shortly",
                    reason="REQUEST_IN_PROGRESS",
                )
            cs.insert_card(
                {
                    "payment_id": payment_id,
                    "merchant_id": who.merchant_id,
                    "terminal_id": terminal_id,
                    "action": cmd.action,
                    "pan_ciphertext": ciphertext,
                    "pan_fingerprint": fingerprint,
                    "pan_masked": masked,
                    "brand": brand,
                    "mti": mti,
                    "stan": trace.stan,
                    "transmitted_at": trace.transmitted_at,
                    "amount_minor": amount.amount_minor,
                    "currency": amount.currency,
                    "state": "sent",
                    "response_code": "",
                    "idem_scope": idem.scope,
                    "idem_key": idem.key,
                    "request_hash": idem.request_hash,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            return None

        replay = await self.d.db.write(intent)
        if replay is not None:
            return replay

        async def forget() -> None:
            # A reversal the client queued for it must be stored before the row goes.
            await self._reversals_persisted()
            await self.d.db.write(lambda s: CardStore(s).delete_card(payment_id))

        try:
            call = self.client.authorize if mti == spec.AUTH_REQUEST else self.client.sale
            resp = await call(
                card,
                amount,
                merchant_id=who.merchant_id,
                terminal_id=terminal_id,
                merchant_reference=cmd.order_id,
                trace=trace,
            )
        except asyncio.CancelledError:  # the client queued its reversal
            self._after_cancel(forget)
            raise
        except CardNetworkError as exc:
            # Unavailable: nothing was sent. Timeout: the client reversed it (or queued the
            # reversal, persisted). Either way nothing is held for this attempt.
            await forget()
            raise self._unavailable(exc, "payment") from None
        except spec.MessageFormatError as exc:
            await forget()
            raise ValidationError(
                f"the request cannot be sent to the card network: {exc}",
                reason="CARD_NETWORK_FORMAT_ERROR",
            ) from None

        def outcome(store: SqlStore) -> bytes:
            now = self._now()
            m = self.m.merchant(store, who.merchant_id)
            row = CardStore(store).get_card(payment_id)
            assert row is not None

            def run() -> Payment:
                return self._record_swipe(store, row, resp, cmd, amount, m.id, now, who)

            return once(store, idem, now, run, encode)

        return await self.d.db.write(outcome)

    def _record_swipe(
        self,
        store: SqlStore,
        row: Row,
        resp: CardResponse,
        cmd: SwipeCard,
        amount: Money,
        merchant_id: str,
        now: datetime,
        who: MerchantPrincipal,
    ) -> Payment:
        m = self.m.merchant(store, merchant_id)
        info = CardInfo(
            pan_masked=row["pan_masked"],
            brand=row["brand"],
            last4=row["pan_masked"][-4:],
            auth_code=resp.auth_code or "",
            response_code=resp.response_code,
            response_text=resp.text,
            network_transaction_id=resp.network_transaction_id or "",
        )
        if not resp.approved:
            status, state, event = PaymentStatus.DECLINED, "declined", EventType.DECLINED
        elif cmd.action == CardAction.AUTHORIZE:
            status, state, event = PaymentStatus.AUTHORIZED, "authorized", EventType.AUTHORIZED
        else:
            status, state, event = PaymentStatus.SUCCEEDED, "captured", EventType.SUCCEEDED
        p = Payment(
            id=row["payment_id"],
            merchant_id=merchant_id,
            terminal_id=who.terminal_id,
            terminal_label=who.terminal_label,
            method=PaymentMethod.CARD,
            status=status,
            order_id=cmd.order_id,
            amount=amount,
            description="",
            created_at=now,
            updated_at=now,
            card=info,
        )
        if status is PaymentStatus.SUCCEEDED:
            p.paid_at = now
            p.fee = amount.percent_bps(merchant_bps(m, self.d.settings.default_discount_bps))
        data = store.insert_payment(p)
        cs = CardStore(store)
        cs.update_card(
            p.id,
            state=state,
            response_code=resp.response_code,
            network_transaction_id=resp.network_transaction_id,
            captured_minor=amount.amount_minor if status is PaymentStatus.SUCCEEDED else None,
            updated_at=now,
        )
        if status is PaymentStatus.AUTHORIZED:
            store.post(hold_entry(p), now)
        elif status is PaymentStatus.SUCCEEDED:
            assert p.fee is not None
            store.post(
                JournalEntry(
                    id=ids.new_id("txn"),
                    kind=EntryKind.CARD_CAPTURE,
                    payment_id=p.id,
                    memo=f"card sale {p.id}",
                    postings=capture_postings(merchant_id, amount, p.fee),
                ),
                now,
            )
        self.m._event(store, p, event, now, data)
        return p

    # -- capture -----------------------------------------------------------------------

    async def capture(
        self,
        who: MerchantPrincipal,
        payment_id: str,
        amount: Money | None,
        idem: Idem,
        encode: Callable[[Payment], bytes],
    ) -> bytes:
        if amount is not None:
            amount = money(amount.amount_minor, amount.currency)

        def intent(store: SqlStore) -> bytes | OriginalRef:
            blob = self._replay(store, idem)
            if blob is not None:
                return blob
            p, row = self._card_payment(store, who, payment_id)
            if (
                p.status is PaymentStatus.SUCCEEDED
                and row["capture_idem_key"] == idem.key
                and row["capture_request_hash"] == idem.request_hash
            ):
                # This very capture was booked by the start-up recovery: answer it now.
                return once(store, idem, self._now(), lambda: p, encode)
            if p.status is not PaymentStatus.AUTHORIZED:
                raise PreconditionFailed(
                    f"payment is {p.status.value}; only an authorized payment can be captured",
                    reason="PAYMENT_NOT_CAPTURABLE",
                    payment_id=p.id,
                )
            want = amount or p.amount
            if want.currency != p.amount.currency:
                raise ValidationError(
                    f"capture must be in {p.amount.currency}", reason="CURRENCY_MISMATCH"
                )
            if want > p.amount:
                raise PreconditionFailed(
                    f"capture of {want} exceeds the authorized {p.amount}",
                    reason="CAPTURE_EXCEEDS_AUTHORIZED",
                    payment_id=p.id,
                )
            # Reuse the trace of an earlier attempt with the same amount (the network
            # answers a retransmission from its record); otherwise a new one, kept first.
            if row["capture_stan"] and row["captured_minor"] == want.amount_minor:
                CardStore(store).update_card(
                    p.id, capture_idem_key=idem.key, capture_request_hash=idem.request_hash
                )
                return OriginalRef(
                    spec.ADVICE_REQUEST,
                    Trace(row["capture_stan"], row["capture_transmitted_at"]),
                    row["merchant_id"],
                    row["terminal_id"],
                    want,
                )
            trace = self.client.new_trace()
            CardStore(store).update_card(
                p.id,
                capture_stan=trace.stan,
                capture_transmitted_at=trace.transmitted_at,
                captured_minor=want.amount_minor,
                capture_idem_key=idem.key,
                capture_request_hash=idem.request_hash,
                updated_at=self._now(),
            )
            return OriginalRef(
                spec.ADVICE_REQUEST, trace, row["merchant_id"], row["terminal_id"], want
            )

        got = await self.d.db.write(intent)
        if isinstance(got, bytes):
            return got
        row = await self.d.db.read(lambda s: CardStore(s).get_card(payment_id))
        assert row is not None
        try:
            resp = await self.client.capture(self._ref(row), got.amount, trace=got.trace)
        except CardNetworkError as exc:
            # Kept: a retry with the same key (or the start-up recovery) re-sends it.
            raise self._unavailable(exc, "capture") from None
        if not resp.approved:
            await self.d.db.write(lambda s: self._forget_capture(s, payment_id))
            raise PreconditionFailed(
                f"the card network refused the capture: {resp.text}",
                reason=resp.reason,
                response_code=resp.response_code,
            )
        captured = got.amount

        def outcome(store: SqlStore) -> bytes:
            now = self._now()

            def run() -> Payment:
                p, _ = self._card_payment(store, who, payment_id)
                return self._book_capture(store, p, captured, now)

            return once(store, idem, now, run, encode)

        return await self.d.db.write(outcome)

    @staticmethod
    def _forget_capture(store: SqlStore, payment_id: str) -> None:
        """The network refused the advice: nothing to re-send on recovery."""
        CardStore(store).update_card(
            payment_id,
            capture_stan=None,
            capture_transmitted_at=None,
            captured_minor=None,
            capture_idem_key=None,
            capture_request_hash=None,
        )

    def _book_capture(self, store: SqlStore, p: Payment, captured: Money, now: datetime) -> Payment:
        """Job 2 of a capture; a capture already booked (by a concurrent retry or the
        recovery) is left as it is."""
        if p.status is not PaymentStatus.AUTHORIZED:
            return p
        m = self.m.merchant(store, p.merchant_id)
        held = p.amount
        version = p.version
        fee = captured.percent_bps(merchant_bps(m, self.d.settings.default_discount_bps))
        p.capture(now, captured, fee)
        store.post(release_entry(p, held, "captured"), now)
        store.post(
            JournalEntry(
                id=ids.new_id("txn"),
                kind=EntryKind.CARD_CAPTURE,
                payment_id=p.id,
                memo=f"card capture {p.id}",
                postings=capture_postings(p.merchant_id, captured, fee),
            ),
            now,
        )
        data = store.update_payment(p, version)
        CardStore(store).update_card(
            p.id, state="captured", captured_minor=captured.amount_minor, updated_at=now
        )
        self.m._event(store, p, EventType.SUCCEEDED, now, data)
        return p

    # -- void --------------------------------------------------------------------------

    async def void(
        self,
        who: MerchantPrincipal,
        payment_id: str,
        idem: Idem,
        encode: Callable[[Payment], bytes],
    ) -> bytes:
        def intent(store: SqlStore) -> bytes | Row:
            blob = self._replay(store, idem)
            if blob is not None:
                return blob
            p, row = self._card_payment(store, who, payment_id)
            voidable = p.status is PaymentStatus.AUTHORIZED or (
                p.status is PaymentStatus.SUCCEEDED and row["batch_id"] is None and p.refunds == []
            )
            if not voidable:
                raise PreconditionFailed(
                    f"payment is {p.status.value}"
                    + ("; its batch is closed: refund it instead" if row["batch_id"] else ""),
                    reason="PAYMENT_NOT_VOIDABLE",
                    payment_id=p.id,
                )
            return row

        got = await self.d.db.write(intent)
        if isinstance(got, bytes):
            return got
        result = await self.client.reverse(self._ref(got))
        if result.status is ReversalStatus.REFUSED:
            raise PreconditionFailed(
                f"the card network refused the reversal: {result.text}; refund instead",
                reason="CARD_REVERSAL_REFUSED",
                response_code=result.response_code or "",
            )
        # reversed / not found: nothing held. queued: persisted, delivered on recovery.

        def outcome(store: SqlStore) -> bytes:
            now = self._now()

            def run() -> Payment:
                p, _ = self._card_payment(store, who, payment_id)
                version = p.version
                was = p.status
                p.void(now)
                if was is PaymentStatus.AUTHORIZED:
                    store.post(release_entry(p, p.amount, "voided"), now)
                else:
                    fee = p.fee or Money.zero(p.amount.currency)
                    store.post(
                        JournalEntry(
                            id=ids.new_id("txn"),
                            kind=EntryKind.REVERSAL,
                            payment_id=p.id,
                            memo=f"card sale {p.id} voided",
                            postings=tuple(
                                Posting(x.credit, x.debit, x.amount)
                                for x in capture_postings(p.merchant_id, p.amount, fee)
                            ),
                        ),
                        now,
                    )
                data = store.update_payment(p, version)
                CardStore(store).update_card(p.id, state="voided", updated_at=now)
                self.m._event(store, p, EventType.VOIDED, now, data)
                return p

            return once(store, idem, now, run, encode)

        return await self.d.db.write(outcome)

    # -- refunds -----------------------------------------------------------------------

    async def is_card_payment(self, who: MerchantPrincipal, payment_id: str) -> bool:
        if not ids.looks_like("pay", payment_id):
            return False

        def q(store: SqlStore) -> bool:
            p = store.get_payment(payment_id)
            return (
                p is not None
                and p.merchant_id == who.merchant_id
                and (p.method is PaymentMethod.CARD)
            )

        return await self.d.db.read(q)

    async def refund(
        self,
        who: MerchantPrincipal,
        cmd: RefundPayment,
        idem: Idem,
        encode: Callable[[Payment], bytes],
    ) -> bytes:
        amount = money(cmd.amount_minor, cmd.currency)
        check_text(cmd.reason, "reason", max_len=MAX_REASON)
        new_id = ids.new_id("ref")
        new_trace = self.client.new_trace()

        def intent(store: SqlStore) -> bytes | tuple[Row, Row, bool]:
            blob = self._replay(store, idem)
            if blob is not None:
                return blob
            p, row = self._card_payment(store, who, cmd.payment_id)
            cs = CardStore(store)
            earlier = cs.refund_by_idem(idem.scope, idem.key)
            if earlier is not None:
                if earlier["request_hash"] != idem.request_hash:
                    raise IdempotencyKeyReused(
                        "this idempotency key was already used for a different request",
                        reason="IDEMPOTENCY_KEY_REUSED",
                    )
                if earlier["state"] != "sent":  # booked by the start-up recovery
                    return once(store, idem, self._now(), lambda: p, encode)
                return earlier, row, False  # re-send the same refund (same trace)
            trial = p.copy()
            trial.add_refund(  # checks state, currency and the refundable amount
                Refund(new_id, amount, amount, Money.zero(amount.currency), "", self._now()),
                self._now(),
            )
            values: Row = {
                "refund_id": new_id,
                "payment_id": p.id,
                "merchant_id": p.merchant_id,
                "stan": new_trace.stan,
                "transmitted_at": new_trace.transmitted_at,
                "amount_minor": amount.amount_minor,
                "currency": amount.currency,
                "state": "sent",
                "created_at": self._now(),
                "idem_scope": idem.scope,
                "idem_key": idem.key,
                "request_hash": idem.request_hash,
                "reason": cmd.reason,
            }
            cs.insert_refund(values)
            return values, row, True

        got = await self.d.db.write(intent)
        if isinstance(got, bytes):
            return got
        ref, card, fresh = got
        resp = await self._send_refund(ref, card, fresh=fresh)

        def outcome(store: SqlStore) -> bytes:
            now = self._now()

            def run() -> Payment:
                p, _ = self._card_payment(store, who, cmd.payment_id)
                return self._book_refund(store, p, ref["refund_id"], resp, now)

            return once(store, idem, now, run, encode)

        return await self.d.db.write(outcome)

    async def _send_refund(self, ref: Row, card: Row, *, fresh: bool) -> CardResponse:
        """Send (or re-send, with its recorded trace) a refund recorded by job 1. Not
        approved, or its answer lost (the client reversed it): the row goes, nothing was
        refunded. Not sent: the row goes only if this was its first sending (an earlier
        one may have reached the network; a later retry re-sends it)."""
        refund_id = ref["refund_id"]

        async def forget() -> None:
            await self._reversals_persisted()
            await self.d.db.write(lambda s: CardStore(s).delete_refund(refund_id))

        try:
            resp = await self.client.refund(
                Money(ref["amount_minor"], ref["currency"]),
                merchant_id=card["merchant_id"],
                terminal_id=card["terminal_id"],
                original_network_transaction_id=card["network_transaction_id"],
                trace=Trace(ref["stan"], ref["transmitted_at"]),
            )
        except asyncio.CancelledError:  # the client queued its reversal
            self._after_cancel(forget)
            raise
        except CardNetworkError as exc:
            if fresh or not isinstance(exc, CardNetworkUnavailable):
                await forget()
            raise self._unavailable(exc, "refund") from None
        if not resp.approved:
            await forget()
            raise PreconditionFailed(
                f"the card network refused the refund: {resp.text}",
                reason=resp.reason,
                response_code=resp.response_code,
            )
        return resp

    def _book_refund(
        self, store: SqlStore, p: Payment, refund_id: str, resp: CardResponse, now: datetime
    ) -> Payment:
        """Job 2 of a refund; one already booked (a concurrent retry, the recovery) is
        left as it is."""
        cs = CardStore(store)
        r = cs.get_refund(refund_id, for_update=True)
        if r is None or r["state"] != "sent":
            return p
        amount = Money(r["amount_minor"], r["currency"])
        version = p.version
        fee_back = fee_refund_for(p, amount)
        refund = Refund(refund_id, amount, amount, fee_back, r["reason"] or "", now)
        p.add_refund(refund, now)
        cur = amount.currency
        postings = [Posting(merchant(p.merchant_id, cur), _receivable(cur), amount)]
        if fee_back.amount_minor:
            postings.append(
                Posting(
                    psp(AccountType.FEE_REVENUE, cur),
                    merchant(p.merchant_id, cur),
                    fee_back,
                )
            )
        store.post(
            JournalEntry(
                id=ids.new_id("txn"),
                kind=EntryKind.REFUND,
                payment_id=p.id,
                memo=f"card refund {refund_id} of {p.id}",
                postings=tuple(postings),
            ),
            now,
        )
        data = store.update_payment(p, version)
        cs.update_refund(
            refund_id, state="approved", network_transaction_id=resp.network_transaction_id
        )
        self.m._event(store, p, EventType.REFUNDED, now, data)
        return p

    # -- batch close -------------------------------------------------------------------

    async def close_batch(
        self, who: MerchantPrincipal, idem: Idem, encode: Callable[[BatchInfo], bytes]
    ) -> bytes:
        """Job 1 records the close (its trace and totals) and claims the open payments and
        refunds; then the 0500; job 2 books the answer. A retry with the same key re-sends
        the same message, which the network answers from its record: one batch, booked
        once. A close left sent by a stop is finished at the next start."""
        close_id = ids.new_id("bat")
        trace = self.client.new_trace()

        def intent(store: SqlStore) -> bytes | tuple[Row, bool]:
            blob = self._replay(store, idem)
            if blob is not None:
                return blob
            self.m.merchant(store, who.merchant_id)
            cs = CardStore(store)
            earlier = cs.close_by_idem(idem.scope, idem.key)
            if earlier is not None:
                if earlier["request_hash"] != idem.request_hash:
                    raise IdempotencyKeyReused(
                        "this idempotency key was already used for a different request",
                        reason="IDEMPOTENCY_KEY_REUSED",
                    )
                if earlier["state"] == "booked":  # by the start-up recovery
                    batch = cs.get_batch(earlier["batch_id"])
                    assert batch is not None
                    return once(store, idem, self._now(), lambda: _batch_info(batch), encode)
                return earlier, False
            if cs.closes_in_state("sent", who.merchant_id):
                raise Unavailable(
                    "another batch close of this merchant is in progress; retry it with its "
                    "own key, or retry this one shortly",
                    reason="REQUEST_IN_PROGRESS",
                )
            sales = cs.unbatched_captures(who.merchant_id)
            refunds = cs.unbatched_refunds(who.merchant_id)
            now = self._now()
            values: Row = {
                "id": close_id,
                "merchant_id": who.merchant_id,
                "stan": trace.stan,
                "transmitted_at": trace.transmitted_at,
                "sales_count": len(sales),
                "sales_minor": sum(int(r["captured_minor"] or 0) for r in sales),
                "refunds_count": len(refunds),
                "refunds_minor": sum(int(r["amount_minor"]) for r in refunds),
                "state": "sent",
                "batch_id": None,
                "idem_scope": idem.scope,
                "idem_key": idem.key,
                "request_hash": idem.request_hash,
                "created_at": now,
                "updated_at": now,
            }
            cs.insert_close(values)
            cs.tag_for_batch(who.merchant_id, close_id)
            return values, True

        got = await self.d.db.write(intent)
        if isinstance(got, bytes):
            return got
        close, fresh = got
        out = await self._finish_close(close, fresh=fresh, idem=idem, encode=encode)
        assert out is not None
        return out

    async def _finish_close(
        self,
        close: Row,
        *,
        fresh: bool,
        idem: Idem | None,
        encode: Callable[[BatchInfo], bytes] | None,
    ) -> bytes | None:
        """Send (or re-send) a recorded close and book the network's answer; without
        ``idem`` (recovery) the booking stores no answer: a retry with the close's key
        then finds it booked."""
        close_id = close["id"]
        mid = close["merchant_id"]
        totals = BatchTotals(
            close["sales_count"],
            close["sales_minor"],
            close["refunds_count"],
            close["refunds_minor"],
        )

        async def release() -> None:
            def job(store: SqlStore) -> None:
                cs = CardStore(store)
                cs.untag_batch(close_id)
                cs.delete_close(close_id)

            await self.d.db.write(job)

        try:
            res = await self.client.close_batch(
                mid, totals=totals, trace=Trace(close["stan"], close["transmitted_at"])
            )
        except CardNetworkError as exc:
            # Not sent on its first sending: nothing happened. Otherwise it may have closed
            # the batch: kept for a retry with the same key, or the next start.
            if fresh and isinstance(exc, CardNetworkUnavailable):
                await release()
            raise self._unavailable(exc, "batch close") from None
        if not res.approved or res.batch_id is None:
            await release()
            meta = {}
            if res.totals is not None:
                meta = {
                    "network_sales_count": str(res.totals.sales_count),
                    "network_sales_minor": str(res.totals.sales_minor),
                    "psp_sales_count": str(totals.sales_count),
                    "psp_sales_minor": str(totals.sales_minor),
                }
            raise PreconditionFailed(
                f"the card network did not close the batch: {res.text}",
                reason="CARD_BATCH_OUT_OF_BALANCE"
                if res.response_code == "95"
                else response_code(res.response_code).reason,
                **meta,
            )
        batch_id = res.batch_id
        rows: list[SettlementRow] | None = None
        path = ""
        if self.settlement_dir is not None:
            f = self.settlement_dir / f"{batch_id}.csv"
            if f.exists():
                rows = parse_csv(f.read_text(encoding="utf-8"))
                path = str(f)
            else:
                log.warning("settlement file of batch %s not found", batch_id)
        mmdd = res.settlement_mmdd or ""
        chargebacks = res.chargebacks

        def outcome(store: SqlStore) -> bytes | None:
            now = self._now()
            cs = CardStore(store)

            def run() -> BatchInfo:
                cur = cs.get_close(close_id, for_update=True)
                assert cur is not None
                if cur["state"] == "booked":
                    batch = cs.get_batch(cur["batch_id"])
                    assert batch is not None
                    return _batch_info(batch)
                info = self._book_batch(
                    store, mid, close_id, batch_id, mmdd, rows, path, chargebacks, now
                )
                cs.update_close(close_id, state="booked", batch_id=batch_id, updated_at=now)
                return info

            if idem is None or encode is None:
                run()
                return None
            return once(store, idem, now, run, encode)

        return await self.d.db.write(outcome)

    def _book_batch(
        self,
        store: SqlStore,
        merchant_id: str,
        close_id: str,
        batch_id: str,
        mmdd: str,
        rows: list[SettlementRow] | None,
        path: str,
        chargebacks: tuple[Chargeback, ...],
        now: datetime,
    ) -> BatchInfo:
        m = self.m.merchant(store, merchant_id)
        cur = m.currency
        cs = CardStore(store)
        # What job 1 claimed for this close: what the network counted.
        sales = cs.cards_in_batch(close_id)
        refunds = cs.refunds_in_batch(close_id)
        # Payout: captured card money becomes the merchant's balance.
        postings: list[Posting] = []
        gross = 0
        for r in sales:
            p = store.get_payment(r["payment_id"])
            assert p is not None
            fee = p.fee or Money.zero(cur)
            amt = Money(int(r["captured_minor"]), r["currency"])
            gross += amt.amount_minor
            if amt.amount_minor - fee.amount_minor > 0:
                postings.append(
                    Posting(
                        _pending(m.id, amt.currency),
                        merchant(m.id, amt.currency),
                        amt - fee,
                    )
                )
            cs.update_card(r["payment_id"], batch_id=batch_id, state="settled", updated_at=now)
        for r in refunds:
            gross -= int(r["amount_minor"])
            cs.update_refund(r["refund_id"], batch_id=batch_id, state="settled")
        if postings:
            store.post(
                JournalEntry(
                    id=ids.new_id("txn"),
                    kind=EntryKind.CARD_PAYOUT,
                    memo=f"card batch {batch_id} payout to {m.id}",
                    postings=tuple(postings),
                ),
                now,
            )
        # Network fees and chargebacks, as the settlement file states them.
        interchange = scheme = 0
        fee_postings: list[Posting] = []
        if rows is not None:
            for row in rows:
                if row.merchant_id != m.id:
                    continue
                pid = None
                card = cs.card_by_ntid(row.network_transaction_id)
                if card is not None:
                    pid = card["payment_id"]
                cs.insert_settlement(
                    {
                        "batch_id": batch_id,
                        "merchant_id": m.id,
                        "network_transaction_id": row.network_transaction_id,
                        "type": row.type,
                        "payment_id": pid,
                        "gross_minor": row.gross,
                        "interchange_minor": row.interchange,
                        "scheme_fee_minor": row.scheme_fee,
                        "net_minor": row.net,
                        "currency": row.currency,
                    }
                )
                c = row.currency
                interchange += row.interchange
                scheme += row.scheme_fee
                if row.type == "fee":
                    # The chargeback fee is the merchant's.
                    if row.scheme_fee:
                        fee_postings.append(
                            Posting(merchant(m.id, c), _receivable(c), Money(row.scheme_fee, c))
                        )
                    continue
                for part in (row.interchange, row.scheme_fee):
                    if part > 0:
                        fee_postings.append(Posting(_fees(c), _receivable(c), Money(part, c)))
                    elif part < 0:  # interchange given back with a chargeback
                        fee_postings.append(Posting(_receivable(c), _fees(c), Money(-part, c)))
            if fee_postings:
                store.post(
                    JournalEntry(
                        id=ids.new_id("txn"),
                        kind=EntryKind.CARD_FEES,
                        memo=f"card batch {batch_id} network fees",
                        postings=tuple(fee_postings),
                    ),
                    now,
                )
        for cb in chargebacks:
            self._chargeback(
                store, m.id, cb.network_transaction_id, cb.amount, cb.reason_code, batch_id, now
            )
        settle_on = _settlement_date(now, mmdd)
        count = len(sales) + len(refunds)
        net = gross - interchange - scheme
        if rows is not None:
            mine = [r for r in rows if r.merchant_id == m.id]
            gross = sum(r.gross for r in mine)
            net = sum(r.net for r in mine)
            count = len(mine)
        cs.insert_batch(
            {
                "id": batch_id,
                "merchant_id": m.id,
                "settlement_date": settle_on,
                "count": count,
                "gross_minor": gross,
                "interchange_minor": interchange,
                "scheme_fee_minor": scheme,
                "net_minor": net,
                "currency": cur,
                "settlement_file": path,
                "closed_at": now,
            }
        )
        return BatchInfo(
            batch_id,
            count,
            Money(gross, cur),
            Money(interchange, cur),
            Money(scheme, cur),
            Money(net, cur),
            now,
            path,
        )

    def _chargeback(
        self,
        store: SqlStore,
        merchant_id: str,
        ntid: str,
        amount: Money,
        reason_code: str,
        batch_id: str,
        now: datetime,
    ) -> None:
        """A chargeback becomes a dispute: the merchant is debited, the payment DISPUTED."""
        cs = CardStore(store)
        if cs.dispute_by_ntid(ntid) is not None:
            return
        card = cs.card_by_ntid(ntid)
        if card is None:
            log.warning("chargeback for an unknown network transaction %s", ntid)
            return
        p = store.get_payment(card["payment_id"], for_update=True)
        assert p is not None
        version = p.version
        p.dispute(now)
        cur = amount.currency
        store.post(
            JournalEntry(
                id=ids.new_id("txn"),
                kind=EntryKind.CHARGEBACK,
                payment_id=p.id,
                memo=f"chargeback {reason_code} of {p.id}",
                postings=(Posting(merchant(merchant_id, cur), _receivable(cur), amount),),
            ),
            now,
        )
        cs.insert_dispute(
            {
                "id": ids.new_id("dsp"),
                "payment_id": p.id,
                "merchant_id": merchant_id,
                "network_transaction_id": ntid,
                "amount_minor": amount.amount_minor,
                "currency": cur,
                "reason_code": reason_code,
                "status": "open",
                "evidence": "",
                "batch_id": batch_id,
                "created_at": now,
                "updated_at": now,
            }
        )
        data = store.update_payment(p, version)
        self.m._event(store, p, EventType.DISPUTED, now, data)

    # -- recovery ----------------------------------------------------------------------

    def recover_sync(self) -> int:
        """At start-up: a swipe recorded as sent but never answered (the PSP stopped in
        between) is reversed, through the persistent queue."""
        rows = self.d.db.read_sync(lambda s: CardStore(s).cards_in_state("sent"))
        for row in rows:
            item = PendingReversal(self._ref(row), self.client.new_trace(), self._now())
            pid = row["payment_id"]

            def job(store: SqlStore, item: PendingReversal = item, pid: str = pid) -> None:
                cs = CardStore(store)
                cs.add_reversal(item)
                cs.delete_card(pid)

            self.d.db.write_sync(job)
        return len(rows)

    async def recover(self) -> int:
        """At start-up, in the background: finish what an earlier run sent but did not
        book. Each is re-sent with its recorded trace, which the network answers from its
        record (nothing happens twice), and the answer is booked once:

        - batch closes left ``sent``;
        - refunds left ``sent`` (an approved one is booked; a declined or lost one is
          dropped: nothing was refunded);
        - capture advices recorded but not booked;
        - representments (dispute evidence) sent but not decided.

        Only what was recorded before this process started (``started_at``) is touched:
        newer rows belong to calls in flight. Whatever cannot be finished now (the network
        is down) stays as it is for a client retry or the next start. Returns how many
        were finished."""
        cutoff = self.started_at

        def load(store: SqlStore) -> tuple[list[Row], list[tuple[Row, Row]], list[Row]]:
            cs = CardStore(store)
            closes = [r for r in cs.closes_in_state("sent") if r["created_at"] < cutoff]
            refunds = []
            for r in cs.refunds_in_state("sent"):
                card = cs.get_card(r["payment_id"])
                if r["created_at"] < cutoff and card is not None:
                    refunds.append((r, card))
            captures = [r for r in cs.pending_captures() if r["updated_at"] < cutoff]
            return closes, refunds, captures

        closes, refunds, captures = await self.d.db.read(load)
        done = 0
        for close in closes:
            try:
                await self._finish_close(close, fresh=False, idem=None, encode=None)
                done += 1
            except (Unavailable, PreconditionFailed) as exc:
                log.warning("batch close %s not recovered: %s", close["id"], exc)
        for ref, card in refunds:
            try:
                resp = await self._send_refund(ref, card, fresh=False)
            except (Unavailable, PreconditionFailed) as exc:
                log.warning("refund %s not recovered: %s", ref["refund_id"], exc)
                continue

            def book(store: SqlStore, ref: Row = ref, resp: CardResponse = resp) -> None:
                p = store.get_payment(ref["payment_id"], for_update=True)
                assert p is not None
                self._book_refund(store, p, ref["refund_id"], resp, self._now())

            await self.d.db.write(book)
            done += 1
        for row in captures:
            amount = Money(int(row["captured_minor"]), row["currency"])
            trace = Trace(row["capture_stan"], row["capture_transmitted_at"])
            try:
                resp = await self.client.capture(self._ref(row), amount, trace=trace)
            except CardNetworkError as exc:
                log.warning("capture of %s not recovered: %s", row["payment_id"], exc.message)
                continue
            pid = row["payment_id"]
            if not resp.approved:

                def forget(store: SqlStore, pid: str = pid) -> None:
                    self._forget_capture(store, pid)

                await self.d.db.write(forget)
                continue

            def book_capture(store: SqlStore, pid: str = pid, amount: Money = amount) -> None:
                p = store.get_payment(pid, for_update=True)
                assert p is not None
                self._book_capture(store, p, amount, self._now())

            await self.d.db.write(book_capture)
            done += 1
        done += await self.disputes.recover(cutoff)
        return done

    async def retry_reversals(self) -> int:
        """Deliver queued reversals; returns how many are still queued."""
        if self.reversals is not None:
            await self.reversals.refresh()  # what other processes queued too
        if not self.client.pending_reversals():
            return 0
        results = await self.client.retry_pending_reversals()
        return sum(1 for r in results if r.status is ReversalStatus.QUEUED)

    def list_disputes(self, merchant_id: str | None = None) -> list[Dispute]:
        return self.disputes.list(merchant_id)


class DisputeServices:
    """Chargebacks as disputes. The merchant accepts one (it stands) or answers it with
    evidence, which goes to the card network as a representment (0600); the network
    decides at once and the decision is booked (won: the amount comes back to the merchant
    and the payment is SUCCEEDED again; lost: the payment is REFUNDED).

    Like the other card calls: job 1 records the evidence and the representment's trace
    (status ``evidence_submitted``), then the network call, then job 2 books the decision
    once. A retry with the same evidence re-sends the same message (same trace), which the
    network answers from its record. ``accept``, ``list`` and the operator's ``decide``
    override need no network."""

    def __init__(
        self,
        deps: Deps,
        merchants: MerchantServices,
        client: CardNetworkClient | None = None,
    ) -> None:
        self.d = deps
        self.m = merchants
        self.client = client

    def list(self, merchant_id: str | None = None) -> list[Dispute]:
        rows = self.d.db.read_sync(lambda s: CardStore(s).list_disputes(merchant_id))
        return [_dispute(r) for r in rows]

    def _resolve(self, store: SqlStore, d: Row, to: str, *, won: bool, now: datetime) -> None:
        """Close the dispute ``d`` as ``to``: the payment leaves DISPUTED (won: SUCCEEDED,
        the chargeback's amount credited back to the merchant; else REFUNDED)."""
        dispute_id = d["id"]
        CardStore(store).update_dispute(dispute_id, status=to, updated_at=now)
        p = store.get_payment(d["payment_id"], for_update=True)
        assert p is not None
        version = p.version
        p.resolve_dispute(now, won=won)
        amount = Money(d["amount_minor"], d["currency"])
        if won:  # the network gives the amount back to the merchant
            cur = amount.currency
            store.post(
                JournalEntry(
                    id=ids.new_id("txn"),
                    kind=EntryKind.CHARGEBACK,
                    payment_id=p.id,
                    memo=f"dispute {dispute_id} won: chargeback reversed",
                    postings=(Posting(_receivable(cur), merchant(p.merchant_id, cur), amount),),
                ),
                now,
            )
        data = store.update_payment(p, version)
        event = EventType.SUCCEEDED if won else EventType.REFUNDED
        self.m._event(store, p, event, now, data)

    def _change(self, dispute_id: str, allowed: tuple[str, ...], to: str, *, won: bool) -> Dispute:
        def job(store: SqlStore) -> Dispute:
            cs = CardStore(store)
            d = _open_dispute(cs, dispute_id, allowed)
            self._resolve(store, d, to, won=won, now=self.d.clock.now())
            after = cs.get_dispute(dispute_id)
            assert after is not None
            return _dispute(after)

        return self.d.db.write_sync(job)

    def accept(self, dispute_id: str) -> Dispute:
        """The merchant accepts the chargeback: it stands."""
        return self._change(dispute_id, ("open",), "accepted", won=False)

    def decide(self, dispute_id: str, *, won: bool) -> Dispute:
        """Operator override: record a decision taken outside the network's representment
        flow (e.g. arbitration) for a dispute whose evidence is submitted."""
        return self._change(dispute_id, ("evidence_submitted",), "won" if won else "lost", won=won)

    async def submit_evidence(self, dispute_id: str, evidence: str) -> Dispute:
        """Send the merchant's evidence to the network (0600) and book its decision.

        Errors: ``CARD_RAIL_UNAVAILABLE`` (no network configured), UNAVAILABLE
        ``CARD_NETWORK_UNAVAILABLE`` (not sent: the dispute is open again, nothing booked)
        or ``CARD_NETWORK_TIMEOUT`` (the answer was lost: retry with the same evidence,
        which re-sends the same message), FAILED_PRECONDITION ``DISPUTE_NOT_OPEN`` or the
        network's reason when it took no decision (the dispute is open again)."""
        check_text(evidence, "evidence", max_len=MAX_EVIDENCE, required=True)
        if self.client is None:
            raise Unavailable(
                "no card network is configured (--cardnet or SCANPAY_CARDNET); "
                "the evidence was not sent",
                reason=CARD_RAIL_UNAVAILABLE,
            )
        new_trace = self.client.new_trace()

        def intent(store: SqlStore) -> Dispute | tuple[Row, Trace, bool]:
            now = self.d.clock.now()
            cs = CardStore(store)
            d = cs.get_dispute(dispute_id)
            if d is None:
                raise NotFound(f"dispute {dispute_id} not found", reason="DISPUTE_NOT_FOUND")
            same = d["evidence"] == evidence
            if same and d["represent_stan"] and d["status"] in ("won", "lost"):
                return _dispute(d)  # decided: a retry answers the decision
            if same and d["status"] == "evidence_submitted":
                if d["represent_stan"]:  # re-send the same representment
                    return d, Trace(d["represent_stan"], d["represent_transmitted_at"]), False
                # submitted before the network decided representments: send it now
                cs.update_dispute(
                    dispute_id,
                    represent_stan=new_trace.stan,
                    represent_transmitted_at=new_trace.transmitted_at,
                    updated_at=now,
                )
                return d, new_trace, False
            if d["status"] != "open":
                raise PreconditionFailed(
                    f"dispute is {d['status']}"
                    + ("; evidence with another text was submitted" if not same else ""),
                    reason="DISPUTE_NOT_OPEN",
                    dispute_id=dispute_id,
                )
            cs.update_dispute(
                dispute_id,
                status="evidence_submitted",
                evidence=evidence,
                represent_stan=new_trace.stan,
                represent_transmitted_at=new_trace.transmitted_at,
                updated_at=now,
            )
            return d, new_trace, True

        got = await self.d.db.write(intent)
        if isinstance(got, Dispute):
            return got
        d, trace, fresh = got
        return await self._represent(d, evidence, trace, fresh=fresh)

    async def _represent(self, d: Row, evidence: str, trace: Trace, *, fresh: bool) -> Dispute:
        """Send (or re-send) a representment recorded by job 1 and book the decision."""
        assert self.client is not None
        dispute_id = d["id"]

        async def reopen() -> None:
            """Nothing was decided: the dispute is open again (a new attempt, a new trace)."""

            def job(store: SqlStore) -> None:
                cs = CardStore(store)
                cur = cs.get_dispute(dispute_id)
                if (
                    cur is not None
                    and cur["status"] == "evidence_submitted"
                    and cur["represent_stan"] == trace.stan
                ):
                    cs.update_dispute(
                        dispute_id,
                        status="open",
                        evidence="",
                        represent_stan=None,
                        represent_transmitted_at=None,
                        updated_at=self.d.clock.now(),
                    )

            await self.d.db.write(job)

        try:
            res = await self.client.represent(
                d["network_transaction_id"],
                Money(d["amount_minor"], d["currency"]),
                merchant_id=d["merchant_id"],
                evidence=evidence,
                trace=trace,
            )
        except CardNetworkTimeout as exc:
            raise Unavailable(
                "no answer from the card network for the representment; it may have been "
                "decided: retry with the same dispute and evidence",
                reason=exc.reason,
            ) from None
        except CardNetworkError as exc:
            if fresh:  # not sent on its first sending: nothing happened
                await reopen()
            raise Unavailable(
                "the card network is unavailable; the evidence was not sent; try again",
                reason=exc.reason,
            ) from None
        except spec.MessageFormatError as exc:
            if fresh:
                await reopen()
            raise ValidationError(
                f"the evidence cannot be sent to the card network: {exc}",
                reason="CARD_NETWORK_FORMAT_ERROR",
            ) from None
        decision = res.decision
        if decision is None:
            await reopen()
            raise PreconditionFailed(
                f"the card network took no decision: {res.text}",
                reason=res.reason,
                response_code=res.response_code,
                dispute_id=dispute_id,
            )

        def outcome(store: SqlStore) -> Dispute:
            cs = CardStore(store)
            cur = cs.get_dispute(dispute_id)
            assert cur is not None
            if cur["status"] == "evidence_submitted":  # else booked already (a retry)
                now = self.d.clock.now()
                self._resolve(store, cur, decision, won=decision == "won", now=now)
                cur = cs.get_dispute(dispute_id)
                assert cur is not None
            return _dispute(cur)

        return await self.d.db.write(outcome)

    async def recover(self, cutoff: datetime) -> int:
        """Re-send the representments recorded before ``cutoff`` and not decided (the PSP
        stopped in between) and book their decisions; returns how many were booked."""
        if self.client is None:
            return 0

        def load(store: SqlStore) -> list[Row]:
            return [
                r
                for r in CardStore(store).list_disputes()
                if r["status"] == "evidence_submitted"
                and r["represent_stan"]
                and r["updated_at"] < cutoff
            ]

        done = 0
        for d in await self.d.db.read(load):
            trace = Trace(d["represent_stan"], d["represent_transmitted_at"])
            try:
                await self._represent(d, d["evidence"], trace, fresh=False)
                done += 1
            except (Unavailable, PreconditionFailed, ValidationError) as exc:
                log.warning("representment of dispute %s not recovered: %s", d["id"], exc)
        return done


def _open_dispute(cs: CardStore, dispute_id: str, allowed: tuple[str, ...]) -> Row:
    d = cs.get_dispute(dispute_id)
    if d is None:
        raise NotFound(f"dispute {dispute_id} not found", reason="DISPUTE_NOT_FOUND")
    if d["status"] not in allowed:
        raise PreconditionFailed(
            f"dispute is {d['status']}", reason="DISPUTE_NOT_OPEN", dispute_id=dispute_id
        )
    return d


def _dispute(r: Row) -> Dispute:
    return Dispute(
        r["id"],
        r["payment_id"],
        r["merchant_id"],
        r["network_transaction_id"],
        Money(r["amount_minor"], r["currency"]),
        r["reason_code"],
        r["status"],
        r["evidence"],
        r["created_at"],
    )


def _batch_info(r: Row) -> BatchInfo:
    cur = r["currency"]
    return BatchInfo(
        r["id"],
        r["count"],
        Money(r["gross_minor"], cur),
        Money(r["interchange_minor"], cur),
        Money(r["scheme_fee_minor"], cur),
        Money(r["net_minor"], cur),
        r["closed_at"],
        r["settlement_file"],
    )


def _settlement_date(now: datetime, mmdd: str) -> str:
    if len(mmdd) != 4:
        return now.date().isoformat()
    year = now.year + (1 if mmdd < f"{now.month:02d}{now.day:02d}" else 0)
    return f"{year}-{mmdd[:2]}-{mmdd[2:]}"
