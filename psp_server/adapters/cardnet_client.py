"""The PSP's side of the card network: an asyncio ISO 8583 client.

* One persistent TCP connection; requests are multiplexed and answers matched on
  (response MTI, STAN, transmission time, terminal). A late answer to a request given up
  on is dropped.
* Every call has a timeout (``timeout=`` per call, else the client's default).
* Retries with exponential backoff (and jitter) only where a retransmission is harmless:
  echo (0800), capture advice (0220), reversal (0400), batch close (0500) and
  representment (0600). A retry
  resends the *same* message (same STAN and transmission time), which the network answers
  from its idempotency record. Authorizations, sales and refunds are never retried.
* When the answer to an authorization, sale or refund is lost (timeout, or the connection
  dropped after sending), the client reverses it (0400) at once and raises
  :class:`CardNetworkTimeout`; if the reversal cannot get through it stays queued
  (:meth:`CardNetworkClient.pending_reversals`) until
  :meth:`CardNetworkClient.retry_pending_reversals` delivers it. So a lost answer never
  becomes a hold or a charge.
* A circuit breaker (closed -> open after ``failure_threshold`` consecutive transport
  failures -> half-open after ``reset_timeout`` seconds -> closed on a success) makes calls
  fail fast with :class:`CardNetworkUnavailable` while the network is down.

Card data is sent and forgotten: nothing here stores a PAN or track; pending reversals
identify the original by STAN and transmission time only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from psp_server.cardnet import spec
from psp_server.cardnet.framing import FrameError, read_frame, write_frame
from psp_server.cardnet.spec import Message, MessageFormatError, OriginalData
from psp_server.domain.cards import Swipe, mask_pan, response_code
from psp_server.domain.money import Money, currency_from_numeric, numeric_code

log = logging.getLogger("scanpay.cardnet.client")

CARD_NETWORK_TIMEOUT = "CARD_NETWORK_TIMEOUT"
CARD_NETWORK_UNAVAILABLE = "CARD_NETWORK_UNAVAILABLE"
CARD_NETWORK_ERROR = "CARD_NETWORK_ERROR"


# --- errors ---------------------------------------------------------------------------------


class CardNetworkError(Exception):
    """The network could not be used. ``reason`` is stable. Declines are not errors: they
    come back as a :class:`CardResponse` with ``approved`` false."""

    reason = CARD_NETWORK_ERROR

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class CardNetworkUnavailable(CardNetworkError):
    """Nothing was sent: the breaker is open or no connection could be made."""

    reason = CARD_NETWORK_UNAVAILABLE


class CardNetworkTimeout(CardNetworkError):
    """The request may have reached the network but its answer did not come back.

    ``trace`` identifies the request. For an authorization, sale or refund, ``reversal``
    tells what became of the automatic reversal (``reversed``/``not_found``: nothing is
    held; ``queued``: it will be delivered by ``retry_pending_reversals``).
    """

    reason = CARD_NETWORK_TIMEOUT

    def __init__(
        self, message: str, *, trace: Trace, reversal: ReversalResult | None = None
    ) -> None:
        super().__init__(message)
        self.trace = trace
        self.reversal = reversal


# --- plain data -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class CardData:
    """What is sent about the card: track 2 for a swipe, else PAN and expiry."""

    pan: str
    expiry_yymm: str | None = None
    track2: str | None = None

    @classmethod
    def from_swipe(cls, swipe: Swipe) -> CardData:
        return cls(swipe.pan, swipe.expiry_yymm, swipe.track2_equivalent or None)

    def __repr__(self) -> str:
        return f"CardData(pan={mask_pan(self.pan)!r}, track2={'yes' if self.track2 else 'no'})"


@dataclass(frozen=True, slots=True)
class Trace:
    """Identifies one request: STAN (field 11) and transmission time (field 7).

    To retry a request safely after a crash, allocate and persist its Trace *before* the
    first send and pass it again.
    """

    stan: str
    transmitted_at: datetime

    @property
    def transmission(self) -> str:
        return spec.transmission_time(self.transmitted_at)


@dataclass(frozen=True, slots=True)
class OriginalRef:
    """What a capture or reversal needs to point at an authorization, sale or refund."""

    mti: str
    trace: Trace
    merchant_id: str
    terminal_id: str
    amount: Money
    processing_code: str = spec.PROC_PURCHASE


@dataclass(frozen=True, slots=True)
class CardResponse:
    """The network's answer. ``reason`` is ``"APPROVED"`` or a stable decline reason."""

    mti: str
    response_code: str
    approved: bool
    reason: str
    text: str
    auth_code: str | None
    network_transaction_id: str | None
    trace: Trace
    original: OriginalRef | None = None  # set for authorizations, sales and refunds


class ReversalStatus(StrEnum):
    REVERSED = "reversed"  # 00: the hold or charge is gone
    NOT_FOUND = "not_found"  # 25: the network never saw the original; nothing held
    REFUSED = "refused"  # e.g. 12: already settled, refund instead
    QUEUED = "queued"  # not delivered yet; see retry_pending_reversals()


@dataclass(frozen=True, slots=True)
class ReversalResult:
    original: OriginalRef
    status: ReversalStatus
    response_code: str | None
    text: str
    network_transaction_id: str | None = None

    @property
    def done(self) -> bool:
        """Nothing is held any more for the original."""
        return self.status in (ReversalStatus.REVERSED, ReversalStatus.NOT_FOUND)


@dataclass(frozen=True, slots=True)
class PendingReversal:
    """A reversal not yet acknowledged. Its own ``trace`` is reused on every retry."""

    original: OriginalRef
    trace: Trace
    created_at: datetime

    @property
    def key(self) -> str:
        return f"{self.original.terminal_id}|{self.trace.stan}|{self.trace.transmission}"


class ReversalQueue(Protocol):
    """Where pending reversals wait. The PSP can persist them (a table) so that they
    survive its own restart; the default keeps them in memory."""

    def add(self, item: PendingReversal) -> None: ...

    def remove(self, item: PendingReversal) -> None: ...

    def items(self) -> list[PendingReversal]: ...


class MemoryReversalQueue:
    def __init__(self) -> None:
        self._items: dict[str, PendingReversal] = {}

    def add(self, item: PendingReversal) -> None:
        self._items[item.key] = item

    def remove(self, item: PendingReversal) -> None:
        self._items.pop(item.key, None)

    def items(self) -> list[PendingReversal]:
        return list(self._items.values())


@dataclass(frozen=True, slots=True)
class Chargeback:
    network_transaction_id: str
    amount: Money
    reason_code: str


@dataclass(frozen=True, slots=True)
class BatchTotals:
    """The PSP's own count of the batch; the network answers 95 when its count differs."""

    sales_count: int
    sales_minor: int
    refunds_count: int
    refunds_minor: int


@dataclass(frozen=True, slots=True)
class RepresentmentResult:
    """The network's answer to a representment (0610). ``decision`` is ``"won"`` (00: the
    chargeback is reversed), ``"lost"`` (05: it stands) or ``None`` when the network did
    not decide (25 unknown original, 12 not charged back, 13 amount differs, 30, 94...)."""

    response_code: str
    decision: str | None
    reason: str
    text: str
    network_transaction_id: str | None
    trace: Trace


@dataclass(frozen=True, slots=True)
class BatchResult:
    response_code: str
    approved: bool
    text: str
    batch_id: str | None
    settlement_mmdd: str | None
    totals: BatchTotals | None  # the network's count
    chargebacks: tuple[Chargeback, ...]
    trace: Trace


# --- circuit breaker ------------------------------------------------------------------------


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """closed -> open after ``failure_threshold`` consecutive failures -> half-open once
    ``reset_timeout`` seconds have passed (one trial call) -> closed on success, open again
    on failure."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._monotonic = monotonic
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._monotonic() - self._opened_at >= self.reset_timeout:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow_request(self) -> bool:
        """May a call go out now? In half-open, only one trial at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._trial:
            return False
        self._trial = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def record_failure(self) -> None:
        self._failures += 1
        self._trial = False
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self._monotonic()

    def release(self) -> None:
        """A trial call ended without a verdict (cancelled): let another one try."""
        self._trial = False


# --- transport ------------------------------------------------------------------------------


class _NotSent(Exception):
    """The request certainly did not reach the network."""

    def __init__(self, message: str, *, breaker_open: bool = False) -> None:
        super().__init__(message)
        self.breaker_open = breaker_open


class _AnswerLost(Exception):
    """The request may have reached the network; no answer came back."""


class _LinkDown(Exception):
    pass


_MatchKey = tuple[str, str, str, str]


def _match_key(msg: Message) -> _MatchKey:
    return (msg.get("t", ""), msg.get("11", ""), msg.get("7", ""), msg.get("41", ""))


class _Link:
    """One TCP connection and the answers awaited on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: dict[_MatchKey, asyncio.Future[Message]] = {}
        self.closed = False
        self.task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                payload = await read_frame(self.reader)
                if payload is None:
                    break
                try:
                    msg = spec.decode(payload)
                except MessageFormatError as exc:
                    log.warning("undecodable answer from the network: %s", exc)
                    continue
                fut = self.pending.pop(_match_key(msg), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                else:
                    log.info("dropping a late answer %s STAN %s", msg.get("t"), msg.get("11"))
        except (asyncio.IncompleteReadError, ConnectionError, FrameError, OSError) as exc:
            log.info("card network connection lost: %s", exc)
        finally:
            self._shut()

    def _shut(self) -> None:
        self.closed = True
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(_LinkDown("connection lost"))
        self.pending.clear()
        self.writer.close()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self._shut()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# --- the client -----------------------------------------------------------------------------


class CardNetworkClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        acquirer_id: str,
        connect_timeout: float | None = None,
        retry_attempts: int = 3,
        backoff_base: float = 0.1,
        backoff_max: float = 2.0,
        jitter: float = 0.2,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        reversal_queue: ReversalQueue | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not acquirer_id.isdigit() or len(acquirer_id) > 11:
            raise ValueError("acquirer_id must be up to 11 digits (ISO 8583 field 32)")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.acquirer_id = acquirer_id
        self.connect_timeout = connect_timeout if connect_timeout is not None else timeout
        self.retry_attempts = max(1, retry_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.jitter = jitter
        self.breaker = breaker or CircuitBreaker(
            failure_threshold=failure_threshold, reset_timeout=reset_timeout, monotonic=monotonic
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self._rng = rng
        self._reversals: ReversalQueue = reversal_queue or MemoryReversalQueue()
        self._link: _Link | None = None
        self._link_lock = asyncio.Lock()
        self._stan = random.randint(1, 999_999)  # a counter start, not a secret

    async def __aenter__(self) -> CardNetworkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()
            self._link = None

    # --- traces -----------------------------------------------------------------------------

    def new_trace(self) -> Trace:
        """A fresh STAN (a per-client counter) stamped with the current time."""
        self._stan = self._stan % 999_999 + 1
        now = self._clock().astimezone(UTC).replace(microsecond=0)
        return Trace(f"{self._stan:06d}", now)

    # --- public calls -----------------------------------------------------------------------

    async def authorize(
        self,
        card: CardData,
        amount: Money,
        *,
        merchant_id: str,
        terminal_id: str,
        merchant_reference: str = "",
        trace: Trace | None = None,
        timeout: float | None = None,
    ) -> CardResponse:
        """0100: put a hold of ``amount`` on the card. Capture it with :meth:`capture`."""
        return await self._financial(
            spec.AUTH_REQUEST,
            spec.PROC_PURCHASE,
            card,
            amount,
            merchant_id,
            terminal_id,
            merchant_reference,
            trace,
            timeout,
        )

    async def sale(
        self,
        card: CardData,
        amount: Money,
        *,
        merchant_id: str,
        terminal_id: str,
        merchant_reference: str = "",
        trace: Trace | None = None,
        timeout: float | None = None,
    ) -> CardResponse:
        """0200 purchase: authorize and capture in one message."""
        return await self._financial(
            spec.FINANCIAL_REQUEST,
            spec.PROC_PURCHASE,
            card,
            amount,
            merchant_id,
            terminal_id,
            merchant_reference,
            trace,
            timeout,
        )

    async def refund(
        self,
        amount: Money,
        *,
        merchant_id: str,
        terminal_id: str,
        original_network_transaction_id: str | None = None,
        card: CardData | None = None,
        merchant_reference: str = "",
        trace: Trace | None = None,
        timeout: float | None = None,
    ) -> CardResponse:
        """0200 refund (processing code 20): credit the card. With the original's network
        transaction id the network finds the card itself and caps refunds at the capture."""
        if card is None and original_network_transaction_id is None:
            raise ValueError("a refund needs the card or the original network transaction id")
        return await self._financial(
            spec.FINANCIAL_REQUEST,
            spec.PROC_REFUND,
            card,
            amount,
            merchant_id,
            terminal_id,
            merchant_reference,
            trace,
            timeout,
            original_ntid=original_network_transaction_id,
        )

    async def capture(
        self,
        original: OriginalRef | CardResponse,
        amount: Money | None = None,
        *,
        trace: Trace | None = None,
        timeout: float | None = None,
    ) -> CardResponse:
        """0220 capture advice for an authorization (``amount`` defaults to all of it).

        Retried with backoff. If it still cannot get through, raises
        :class:`CardNetworkTimeout`/:class:`CardNetworkUnavailable` carrying the trace:
        call again later with ``trace=`` that trace.
        """
        ref = _ref(original)
        amount = amount or ref.amount
        if amount.currency != ref.amount.currency:
            raise ValueError("capture currency differs from the authorization")
        trace = trace or self.new_trace()
        msg = {
            "t": spec.ADVICE_REQUEST,
            "3": spec.PROC_PURCHASE,
            "4": spec.amount_field(amount.amount_minor),
            "7": trace.transmission,
            "11": trace.stan,
            "32": self.acquirer_id,
            "41": ref.terminal_id,
            "42": ref.merchant_id,
            "49": numeric_code(amount.currency),
            "90": self._original_data(ref),
        }
        reply = await self._retrying(msg, trace, timeout)
        return _response(reply, trace)

    async def reverse(
        self, original: OriginalRef | CardResponse, *, timeout: float | None = None
    ) -> ReversalResult:
        """0400: release an authorization's hold, or void a sale/refund before settlement.

        Retried with backoff; if it cannot get through it is queued (status ``queued``) and
        delivered by :meth:`retry_pending_reversals`. Never raises for transport problems.
        """
        return await self._reverse(_ref(original), timeout)

    async def close_batch(
        self,
        merchant_id: str,
        *,
        terminal_id: str = "",
        totals: BatchTotals | None = None,
        trace: Trace | None = None,
        timeout: float | None = None,
    ) -> BatchResult:
        """0500: close the merchant's batch; the network clears it and writes the
        settlement file. Retried with the same STAN (the network answers a retransmission
        from its record, so the batch closes once)."""
        trace = trace or self.new_trace()
        msg = {
            "t": spec.BATCH_REQUEST,
            "7": trace.transmission,
            "11": trace.stan,
            "32": self.acquirer_id,
            "42": merchant_id,
        }
        if terminal_id:
            msg["41"] = terminal_id
        if totals is not None:
            msg["76"] = f"{totals.sales_count:010d}"
            msg["88"] = spec.amount_field(totals.sales_minor, 16)
            msg["74"] = f"{totals.refunds_count:010d}"
            msg["86"] = spec.amount_field(totals.refunds_minor, 16)
        reply = await self._retrying(msg, trace, timeout)
        return _batch_result(reply, trace)

    async def represent(
        self,
        original_network_transaction_id: str,
        amount: Money,
        *,
        merchant_id: str,
        evidence: str,
        trace: Trace | None = None,
        timeout: float | None = None,
    ) -> RepresentmentResult:
        """0600 representment: answer the chargeback of ``original_network_transaction_id``
        (``amount``: the amount charged back) with the merchant's evidence (field 72); the
        network decides at once. Retried with the same STAN (the network answers a
        retransmission from its record and decides once per chargeback). Pass ``trace=``,
        persisted before the first send, to retry safely after a crash."""
        trace = trace or self.new_trace()
        msg: Message = {
            "t": spec.REPRESENTMENT_REQUEST,
            "4": spec.amount_field(amount.amount_minor),
            "7": trace.transmission,
            "11": trace.stan,
            "32": self.acquirer_id,
            "42": merchant_id,
            "49": numeric_code(amount.currency),
            "56": original_network_transaction_id,
        }
        if evidence:
            msg["72"] = spec.evidence_field(evidence)
        spec.check(msg)  # a bad field is the caller's error, raised before anything is sent
        reply = await self._retrying(msg, trace, timeout)
        code = reply.get("39", "")
        meaning = response_code(code)
        return RepresentmentResult(
            response_code=code,
            decision={"00": "won", "05": "lost"}.get(code),
            reason=meaning.reason,
            text=reply.get("44", meaning.text),
            network_transaction_id=reply.get("37"),
            trace=trace,
        )

    async def echo(self, *, timeout: float | None = None) -> CardResponse:
        """0800 echo test (retried)."""
        trace = self.new_trace()
        msg = {
            "t": spec.NETWORK_REQUEST,
            "7": trace.transmission,
            "11": trace.stan,
            "70": spec.NMI_ECHO,
        }
        return _response(await self._retrying(msg, trace, timeout), trace)

    def pending_reversals(self) -> list[PendingReversal]:
        return self._reversals.items()

    async def retry_pending_reversals(
        self, *, timeout: float | None = None
    ) -> list[ReversalResult]:
        """Try every queued reversal once; returns one result per item (``queued`` for
        those still not delivered). Stops sending as soon as the breaker opens."""
        results = []
        for item in self._reversals.items():
            results.append(await self._deliver_reversal(item, timeout, attempts=1))
        return results

    # --- internals --------------------------------------------------------------------------

    def _original_data(self, ref: OriginalRef) -> str:
        return OriginalData(
            ref.mti, ref.trace.stan, ref.trace.transmission, self.acquirer_id
        ).encode()

    async def _financial(
        self,
        mti: str,
        processing_code: str,
        card: CardData | None,
        amount: Money,
        merchant_id: str,
        terminal_id: str,
        merchant_reference: str,
        trace: Trace | None,
        timeout: float | None,
        *,
        original_ntid: str | None = None,
    ) -> CardResponse:
        if amount.amount_minor <= 0:
            raise ValueError("amount must be positive")
        trace = trace or self.new_trace()
        msg: Message = {
            "t": mti,
            "3": processing_code,
            "4": spec.amount_field(amount.amount_minor),
            "7": trace.transmission,
            "11": trace.stan,
            "25": "00",
            "32": self.acquirer_id,
            "41": terminal_id,
            "42": merchant_id,
            "49": numeric_code(amount.currency),
        }
        if card is not None:
            if card.track2:
                msg["35"] = card.track2
                msg["22"] = spec.POS_ENTRY_MAGSTRIPE
            else:
                msg["2"] = card.pan
                msg["22"] = spec.POS_ENTRY_KEYED
                if card.expiry_yymm:
                    msg["14"] = card.expiry_yymm
        if merchant_reference:
            msg["48"] = merchant_reference
        if original_ntid:
            msg["56"] = original_ntid
        spec.check(msg)  # a bad field is the caller's error, raised before anything is sent
        ref = OriginalRef(mti, trace, merchant_id, terminal_id, amount, processing_code)
        try:
            reply = await self._exchange(msg, timeout)
        except asyncio.CancelledError:
            # The caller gave up; the request may be out. Queue its reversal, never send it
            # from a cancelled task.
            self._reversals.add(PendingReversal(ref, self.new_trace(), self._clock()))
            raise
        except _NotSent as exc:
            raise CardNetworkUnavailable(f"card network unavailable: {exc}") from None
        except _AnswerLost as exc:
            reversal = await self._reverse(ref, timeout)
            raise CardNetworkTimeout(
                f"no answer from the card network ({exc}); reversal {reversal.status.value}",
                trace=trace,
                reversal=reversal,
            ) from None
        return _response(reply, trace, ref)

    async def _reverse(self, ref: OriginalRef, timeout: float | None) -> ReversalResult:
        item = PendingReversal(ref, self.new_trace(), self._clock())
        self._reversals.add(item)  # queued first: survives whatever happens next
        return await self._deliver_reversal(item, timeout, attempts=self.retry_attempts)

    async def _deliver_reversal(
        self, item: PendingReversal, timeout: float | None, *, attempts: int
    ) -> ReversalResult:
        ref = item.original
        msg = {
            "t": spec.REVERSAL_REQUEST,
            "3": ref.processing_code,
            "4": spec.amount_field(ref.amount.amount_minor),
            "7": item.trace.transmission,
            "11": item.trace.stan,
            "32": self.acquirer_id,
            "41": ref.terminal_id,
            "42": ref.merchant_id,
            "49": numeric_code(ref.amount.currency),
            "90": self._original_data(ref),
        }
        try:
            reply = await self._retrying(msg, item.trace, timeout, attempts=attempts)
        except CardNetworkError as exc:
            log.warning("reversal of STAN %s queued: %s", ref.trace.stan, exc.message)
            return ReversalResult(ref, ReversalStatus.QUEUED, None, exc.message)
        self._reversals.remove(item)
        code = reply.get("39", "")
        status = {"00": ReversalStatus.REVERSED, "25": ReversalStatus.NOT_FOUND}.get(
            code, ReversalStatus.REFUSED
        )
        return ReversalResult(
            ref, status, code, reply.get("44", response_code(code).text), reply.get("37")
        )

    async def _retrying(
        self, msg: Message, trace: Trace, timeout: float | None, *, attempts: int | None = None
    ) -> Message:
        attempts = attempts or self.retry_attempts
        delay = self.backoff_base
        lost = False
        last = ""
        for attempt in range(attempts):
            try:
                return await self._exchange(msg, timeout)
            except _NotSent as exc:
                last = str(exc)
                if exc.breaker_open:
                    break
            except _AnswerLost as exc:
                lost, last = True, str(exc)
            if attempt + 1 < attempts:
                await self._sleep(min(self.backoff_max, delay) * (1 + self.jitter * self._rng()))
                delay *= 2
        if lost:
            raise CardNetworkTimeout(f"no answer from the card network ({last})", trace=trace)
        raise CardNetworkUnavailable(f"card network unavailable: {last}")

    async def _connect(self) -> _Link:
        async with self._link_lock:
            if self._link is not None and not self._link.closed:
                return self._link
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(self.host, self.port)
            except (OSError, TimeoutError) as exc:
                raise _NotSent(f"cannot connect to {self.host}:{self.port}: {exc}") from None
            self._link = _Link(reader, writer)
            return self._link

    async def _exchange(self, msg: Message, timeout: float | None) -> Message:
        """Send one request and await its answer; feeds the breaker."""
        payload = spec.encode(msg)
        if not self.breaker.allow_request():
            raise _NotSent("circuit breaker open", breaker_open=True)
        verdict = False
        try:
            try:
                link = await self._connect()
            except _NotSent:
                self.breaker.record_failure()
                verdict = True
                raise
            key = (spec.response_mti(msg["t"]), msg["11"], msg["7"], msg.get("41", ""))
            fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            link.pending[key] = fut
            try:
                async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                    await write_frame(link.writer, payload)
                    reply = await fut
            except TimeoutError:
                self.breaker.record_failure()
                verdict = True
                link.pending.pop(key, None)
                if not link.pending:  # idle now: drop it, in case the peer is stuck
                    await link.close()
                raise _AnswerLost("timed out") from None
            except (_LinkDown, ConnectionError, OSError) as exc:
                self.breaker.record_failure()
                verdict = True
                await link.close()
                raise _AnswerLost(f"connection lost: {exc}") from None
            finally:
                link.pending.pop(key, None)
            self.breaker.record_success()
            verdict = True
            return reply
        finally:
            if not verdict:
                self.breaker.release()


def _ref(original: OriginalRef | CardResponse) -> OriginalRef:
    if isinstance(original, OriginalRef):
        return original
    if original.original is None:
        raise ValueError("this response does not refer to an authorization, sale or refund")
    return original.original


def _response(reply: Message, trace: Trace, ref: OriginalRef | None = None) -> CardResponse:
    code = reply.get("39", "")
    meaning = response_code(code)
    return CardResponse(
        mti=reply.get("t", ""),
        response_code=code,
        approved=meaning.approved,
        reason=meaning.reason,
        text=reply.get("44", meaning.text),
        auth_code=reply.get("38"),
        network_transaction_id=reply.get("37"),
        trace=trace,
        original=ref,
    )


def _batch_result(reply: Message, trace: Trace) -> BatchResult:
    code = reply.get("39", "")
    totals = None
    if all(f in reply for f in ("74", "76", "86", "88")):
        totals = BatchTotals(int(reply["76"]), int(reply["88"]), int(reply["74"]), int(reply["86"]))
    chargebacks = []
    for rec in spec.decode_chargebacks(reply.get("63", "")):
        currency = currency_from_numeric(rec.currency_numeric)
        if currency is None:
            raise CardNetworkError("chargeback in an unknown currency")
        chargebacks.append(
            Chargeback(
                rec.network_transaction_id, Money(rec.amount_minor, currency), rec.reason_code
            )
        )
    return BatchResult(
        response_code=code,
        approved=code == "00",
        text=reply.get("44", response_code(code).text),
        batch_id=reply.get("62"),
        settlement_mmdd=reply.get("15"),
        totals=totals,
        chargebacks=tuple(chargebacks),
        trace=trace,
    )


__all__ = [
    "CARD_NETWORK_ERROR",
    "CARD_NETWORK_TIMEOUT",
    "CARD_NETWORK_UNAVAILABLE",
    "BatchResult",
    "BatchTotals",
    "BreakerState",
    "CardData",
    "CardNetworkClient",
    "CardNetworkError",
    "CardNetworkTimeout",
    "CardNetworkUnavailable",
    "CardResponse",
    "Chargeback",
    "CircuitBreaker",
    "MemoryReversalQueue",
    "OriginalRef",
    "PendingReversal",
    "RepresentmentResult",
    "ReversalQueue",
    "ReversalResult",
    "ReversalStatus",
    "Trace",
]
