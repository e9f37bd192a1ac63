"""The card network simulator as its own process, driven over TCP by the PSP's client.

Also, in process: the switch's rules on a fake clock and the circuit breaker's states.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from psp_server.adapters.cardnet_client import (
    BatchTotals,
    BreakerState,
    CardData,
    CardNetworkClient,
    CardNetworkTimeout,
    CardNetworkUnavailable,
    CircuitBreaker,
    OriginalRef,
    ReversalStatus,
    Trace,
)
from psp_server.cardnet import spec
from psp_server.cardnet.settlement import parse_csv
from psp_server.cardnet.store import Store
from psp_server.cardnet.switch import Switch, settlement_path
from psp_server.domain.money import Money
from tests.support.cardnet import CardnetProcess

ROOT = Path(__file__).resolve().parents[2]
ACQUIRER = "123456"
EXPIRY = "3012"
NO_ANSWER = "4000000000000119"


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


def new_merchant() -> str:
    return f"mer_{uuid.uuid4().hex[:10]}"


class Simulator(CardnetProcess):
    """The simulator process (tests/support/cardnet.py); ``start`` gives its port."""

    def start(self, port: int = 0) -> int:  # type: ignore[override]
        return super().start(port).port


async def eventually(check: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Poll ``check`` until true (for another process to get somewhere), or fail."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = Simulator(tmp_path_factory.mktemp("cardnet") / "data")
    sim.start()
    yield sim
    assert sim.terminate() == 0  # SIGTERM: a clean exit
    sim.close()


@pytest.fixture
def own_net(tmp_path: Path) -> Iterator[Simulator]:
    sim = Simulator(tmp_path / "data")
    yield sim
    sim.close()


def client_for(sim: Simulator, **kw: object) -> CardNetworkClient:
    options: dict[str, object] = {"timeout": 5.0, "acquirer_id": ACQUIRER, "backoff_base": 0.01}
    options.update(kw)
    return CardNetworkClient("127.0.0.1", sim.port, **options)  # type: ignore[arg-type]


# --- every test card --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pan", "code", "reason"),
    [
        ("4111111111111111", "00", "APPROVED"),
        ("4242424242424242", "00", "APPROVED"),
        ("5555555555554444", "00", "APPROVED"),
        ("378282246310005", "00", "APPROVED"),
        ("4000000000000259", "00", "APPROVED"),
        ("4000000000000002", "05", "CARD_DECLINED"),
        ("4000000000009995", "51", "CARD_INSUFFICIENT_FUNDS"),
        ("4000000000000069", "54", "CARD_EXPIRED"),
        ("4000000000009987", "41", "CARD_LOST"),
        ("4000000000009979", "43", "CARD_STOLEN"),
        ("4111111111111112", "14", "CARD_INVALID_NUMBER"),
        ("3530111333300000", "15", "CARD_NO_SUCH_ISSUER"),
    ],
)
async def test_test_card_outcomes(net: Simulator, pan: str, code: str, reason: str) -> None:
    merchant = new_merchant()
    async with client_for(net) as client:
        r = await client.authorize(
            CardData(pan, EXPIRY), eur(1250), merchant_id=merchant, terminal_id="trm_1"
        )
    assert (r.response_code, r.reason, r.approved) == (code, reason, code == "00")
    assert r.mti == "0110"
    if code == "00":
        assert r.auth_code and len(r.auth_code) == 6
        assert r.network_transaction_id and len(r.network_transaction_id) == 12
    else:
        assert r.auth_code is None
    assert net.holds(merchant) == (1 if code == "00" else 0)


async def test_swiped_track_2_and_expired_card_in_the_message(net: Simulator) -> None:
    merchant = new_merchant()
    async with client_for(net) as client:
        swiped = CardData("4111111111111111", track2="4111111111111111=3012101000")
        ok = await client.sale(swiped, eur(500), merchant_id=merchant, terminal_id="trm_1")
        old = CardData("4111111111111111", "2001")
        late = await client.authorize(old, eur(500), merchant_id=merchant, terminal_id="trm_1")
        debit = CardData("4242424242424242", EXPIRY)
        big = await client.authorize(debit, eur(500_001), merchant_id=merchant, terminal_id="trm_1")
    assert ok.approved and ok.mti == "0210"
    assert late.response_code == "54"
    assert big.response_code == "51"  # more than the debit card's balance


# --- idempotency ------------------------------------------------------------------------------


async def test_retransmitted_authorization_makes_one_hold(net: Simulator) -> None:
    merchant = new_merchant()
    card = CardData("5555555555554444", EXPIRY)
    async with client_for(net) as client:
        trace = client.new_trace()
        first = await client.authorize(
            card, eur(4200), merchant_id=merchant, terminal_id="trm_1", trace=trace
        )
        again = await client.authorize(
            card, eur(4200), merchant_id=merchant, terminal_id="trm_1", trace=trace
        )
        other = await client.authorize(
            card, eur(9999), merchant_id=merchant, terminal_id="trm_1", trace=trace
        )
    assert first.approved and again == first
    assert other.response_code == "94" and other.reason == "CARD_DUPLICATE_TRANSMISSION"
    assert net.holds(merchant) == 1


# --- lost answers ---------------------------------------------------------------------------


async def test_timeout_card_is_reversed_and_holds_nothing(net: Simulator) -> None:
    merchant = new_merchant()
    async with client_for(net, timeout=0.3) as client:
        with pytest.raises(CardNetworkTimeout) as info:
            await client.authorize(
                CardData(NO_ANSWER, EXPIRY), eur(1000), merchant_id=merchant, terminal_id="t"
            )
        assert client.pending_reversals() == []
    err = info.value
    assert err.reason == "CARD_NETWORK_TIMEOUT"
    assert err.reversal is not None and err.reversal.status is ReversalStatus.REVERSED
    assert err.reversal.done
    assert net.holds(merchant) == 0
    assert list(net.statuses(merchant).values()) == ["reversed"]  # it had held, then released


async def test_sigkill_before_the_answer_then_reverse_on_recovery(own_net: Simulator) -> None:
    port = own_net.start()
    merchant = new_merchant()
    async with client_for(own_net, timeout=30.0, failure_threshold=50) as client:
        pending = asyncio.create_task(
            client.authorize(
                CardData(NO_ANSWER, EXPIRY), eur(777), merchant_id=merchant, terminal_id="t"
            )
        )
        # The issuer has committed the hold; the answer is not out. Kill the network now.
        await eventually(lambda: own_net.holds(merchant) == 1, "the hold")
        own_net.kill()
        with pytest.raises(CardNetworkTimeout) as info:
            await pending
        assert info.value.reversal is not None
        assert info.value.reversal.status is ReversalStatus.QUEUED
        assert len(client.pending_reversals()) == 1

        own_net.start(port)
        assert own_net.holds(merchant) == 1  # acknowledged state survived the SIGKILL
        results = await client.retry_pending_reversals()
        assert [r.status for r in results] == [ReversalStatus.REVERSED]
        assert client.pending_reversals() == []
        assert own_net.holds(merchant) == 0
        again = await client.retry_pending_reversals()
        assert again == []


async def test_reversal_of_an_original_the_network_never_saw(net: Simulator) -> None:
    merchant = new_merchant()
    async with client_for(net) as client:
        ghost = OriginalRef("0100", client.new_trace(), merchant, "trm_1", eur(100))
        result = await client.reverse(ghost)
        assert result.status is ReversalStatus.NOT_FOUND and result.done
        # Should the original turn up after all, it holds nothing.
        late = await client.authorize(
            CardData("4111111111111111", EXPIRY),
            eur(100),
            merchant_id=merchant,
            terminal_id="trm_1",
            trace=ghost.trace,
        )
    assert not late.approved
    assert net.holds(merchant) == 0


async def test_void_and_capture_rules(net: Simulator) -> None:
    merchant = new_merchant()
    card = CardData("4111111111111111", EXPIRY)
    async with client_for(net) as client:
        auth = await client.authorize(card, eur(5000), merchant_id=merchant, terminal_id="trm_1")
        void = await client.reverse(auth)
        assert void.status is ReversalStatus.REVERSED
        assert (await client.reverse(auth)).status is ReversalStatus.REVERSED  # idempotent
        late_capture = await client.capture(auth)
        assert late_capture.response_code == "12"
        assert net.holds(merchant) == 0

        auth2 = await client.authorize(card, eur(5000), merchant_id=merchant, terminal_id="trm_1")
        too_much = await client.capture(auth2, eur(5001))
        assert too_much.response_code == "13"
        cap = await client.capture(auth2, eur(4000))
        assert cap.approved and cap.mti == "0230"
        assert cap.network_transaction_id == auth2.network_transaction_id
        assert (await client.capture(auth2, eur(4000))).approved  # same capture again: fine
        assert (await client.capture(auth2, eur(3000))).response_code == "12"
        assert net.holds(merchant) == 0


# --- circuit breaker --------------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_breaker_opens_fails_fast_and_closes_when_back(own_net: Simulator) -> None:
    port = own_net.start()
    own_net.kill()  # the network is down
    clock = FakeMonotonic()
    card = CardData("4111111111111111", EXPIRY)
    merchant = new_merchant()
    async with client_for(
        own_net, failure_threshold=3, reset_timeout=30.0, monotonic=clock, retry_attempts=1
    ) as client:
        for _ in range(3):
            with pytest.raises(CardNetworkUnavailable) as info:
                await client.authorize(card, eur(100), merchant_id=merchant, terminal_id="t")
            assert info.value.reason == "CARD_NETWORK_UNAVAILABLE"
        assert client.breaker.state is BreakerState.OPEN
        assert client.pending_reversals() == []  # nothing was sent, nothing to reverse

        own_net.start(port)  # back, but the breaker has not noticed yet: fail fast
        with pytest.raises(CardNetworkUnavailable, match="breaker open"):
            await client.echo()
        with pytest.raises(CardNetworkUnavailable, match="breaker open"):
            await client.authorize(card, eur(100), merchant_id=merchant, terminal_id="t")
        assert own_net.holds(merchant) == 0

        clock.advance(30.0)
        assert client.breaker.state is BreakerState.HALF_OPEN
        echo = await client.echo()
        assert echo.approved and echo.mti == "0810"
        assert client.breaker.state is BreakerState.CLOSED
        ok = await client.authorize(card, eur(100), merchant_id=merchant, terminal_id="t")
        assert ok.approved


def test_breaker_state_machine() -> None:
    clock = FakeMonotonic()
    b = CircuitBreaker(failure_threshold=2, reset_timeout=5.0, monotonic=clock)
    assert b.state is BreakerState.CLOSED and b.allow_request()
    b.record_failure()
    b.record_success()  # a success resets the count
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow_request()
    clock.advance(4.9)
    assert not b.allow_request()
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow_request()  # the one trial
    assert not b.allow_request()  # others wait for its verdict
    b.record_failure()  # trial failed: open again, cool-down restarts
    assert b.state is BreakerState.OPEN
    clock.advance(5.0)
    assert b.allow_request()
    b.release()  # trial cancelled: another may try
    assert b.allow_request()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 0


# --- batch close and settlement ---------------------------------------------------------------


async def test_batch_close_clears_fees_and_chargebacks(net: Simulator) -> None:
    merchant = new_merchant()
    kw: dict[str, Any] = {"merchant_id": merchant, "terminal_id": "trm_1"}
    async with client_for(net) as client:
        a1 = await client.authorize(
            CardData("4111111111111111", EXPIRY), eur(10_000), merchant_reference="order-1", **kw
        )
        await client.capture(a1, eur(8_000))
        s1 = await client.sale(
            CardData("4242424242424242", EXPIRY), eur(5_000), merchant_reference="order-2", **kw
        )
        r1 = await client.refund(
            eur(2_000),
            original_network_transaction_id=s1.network_transaction_id,
            merchant_reference="order-2",
            **kw,
        )
        over = await client.refund(
            eur(3_001), original_network_transaction_id=s1.network_transaction_id, **kw
        )
        a2 = await client.authorize(
            CardData("4000000000000259", EXPIRY), eur(7_000), merchant_reference="order-3", **kw
        )
        await client.capture(a2)
        a3 = await client.authorize(CardData("5555555555554444", EXPIRY), eur(3_000), **kw)
        await client.reverse(a3)  # voided: not in the batch
        a4 = await client.authorize(CardData("5555555555554444", EXPIRY), eur(1_000), **kw)
        assert all(x.approved for x in (a1, s1, r1, a2, a3, a4))
        assert over.response_code == "13"  # refunds may not exceed the payment

        wrong = await client.close_batch(merchant, totals=BatchTotals(3, 20_000, 0, 0))
        assert wrong.response_code == "95" and wrong.batch_id is None
        assert wrong.totals == BatchTotals(3, 20_000, 1, 2_000)

        trace = client.new_trace()
        closed = await client.close_batch(
            merchant, totals=BatchTotals(3, 20_000, 1, 2_000), trace=trace
        )
        assert closed.approved and closed.batch_id
        assert [c.network_transaction_id for c in closed.chargebacks] == [a2.network_transaction_id]
        assert closed.chargebacks[0].amount == eur(7_000)
        again = await client.close_batch(
            merchant, totals=BatchTotals(3, 20_000, 1, 2_000), trace=trace
        )
        assert again == closed  # a retransmission: answered from the record, closed once
        assert (await client.close_batch(merchant, trace=trace)).response_code == "94"
        empty = await client.close_batch(merchant)
        assert empty.approved and empty.batch_id != closed.batch_id
        assert empty.totals == BatchTotals(0, 0, 0, 0)
        settled = await client.reverse(s1)
        assert settled.status is ReversalStatus.REFUSED and settled.response_code == "12"

    path = settlement_path(net.data_dir, closed.batch_id)
    rows = parse_csv(path.read_text())
    got = [
        (
            r.network_transaction_id,
            r.merchant_reference,
            r.type,
            r.gross,
            r.interchange,
            r.scheme_fee,
            r.net,
        )
        for r in rows
    ]
    assert got == [
        (a1.network_transaction_id, "order-1", "payment", 8_000, 24, 6, 7_970),
        (s1.network_transaction_id, "order-2", "payment", 5_000, 10, 5, 4_985),
        (r1.network_transaction_id, "order-2", "refund", -2_000, 0, 3, -2_003),
        (a2.network_transaction_id, "order-3", "payment", 7_000, 21, 6, 6_973),
        (a2.network_transaction_id, "order-3", "chargeback", -7_000, -21, 0, -6_979),
        (a2.network_transaction_id, "order-3", "fee", 0, 0, 1_500, -1_500),
    ]
    for r in rows:
        assert r.gross - r.interchange - r.scheme_fee == r.net
        assert (r.batch_id, r.merchant_id, r.currency) == (closed.batch_id, merchant, "EUR")
        assert r.settlement_date[5:7] + r.settlement_date[8:10] == closed.settlement_mmdd
    assert parse_csv(settlement_path(net.data_dir, empty.batch_id or "").read_text()) == []
    assert net.holds(merchant) == 1  # a4, never captured, still held


async def test_chargebacks_are_listed_by_the_cli(
    net: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from psp_server.__main__ import main

    merchant = new_merchant()
    async with client_for(net) as client:
        disputed = await client.sale(
            CardData("4000000000000259", EXPIRY), eur(900), merchant_id=merchant, terminal_id="t"
        )
        await client.close_batch(merchant)
    argv = ["cardnet", "chargebacks", "--data", str(net.data_dir), "--merchant", merchant]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["type"], r["gross"], r["network_transaction_id"]) for r in rows] == [
        ("chargeback", -900, disputed.network_transaction_id)
    ]


async def test_representment_decides_and_the_reversal_settles(net: Simulator) -> None:
    """0600: evidence of 20 non-blank characters or more wins (00), shorter loses (05); one
    decision per chargeback, a retransmission answered from the record; a won chargeback
    comes back as a ``chargeback_reversal`` row in the merchant's next batch."""
    merchant = new_merchant()
    card = CardData("4000000000000259", EXPIRY)
    long_text = "signed receipt, goods delivered 2026-11-20"
    async with client_for(net) as client:
        won = await client.sale(card, eur(7_000), merchant_id=merchant, terminal_id="t")
        lost = await client.sale(card, eur(3_000), merchant_id=merchant, terminal_id="t")
        plain = await client.sale(
            CardData("4111111111111111", EXPIRY), eur(500), merchant_id=merchant, terminal_id="t"
        )
        first = await client.close_batch(merchant)
        assert len(first.chargebacks) == 2
        won_id, lost_id = won.network_transaction_id or "", lost.network_transaction_id or ""

        # Not charged back, unknown, another merchant, wrong amount: no decision.
        r = await client.represent(
            plain.network_transaction_id or "", eur(500), merchant_id=merchant, evidence=long_text
        )
        assert (r.response_code, r.decision) == ("12", None)
        r = await client.represent("FFFFFFFFFFFF", eur(1), merchant_id=merchant, evidence="x")
        assert (r.response_code, r.decision) == ("25", None)
        r = await client.represent(won_id, eur(7_000), merchant_id="other", evidence=long_text)
        assert (r.response_code, r.decision) == ("25", None)
        r = await client.represent(won_id, eur(6_999), merchant_id=merchant, evidence=long_text)
        assert (r.response_code, r.decision) == ("13", None)

        trace = client.new_trace()
        w = await client.represent(
            won_id, eur(7_000), merchant_id=merchant, evidence=long_text, trace=trace
        )
        assert (w.response_code, w.decision, w.network_transaction_id) == ("00", "won", won_id)
        again = await client.represent(
            won_id, eur(7_000), merchant_id=merchant, evidence=long_text, trace=trace
        )
        assert again == w  # retransmission: the stored answer
        other = await client.represent(won_id, eur(7_000), merchant_id=merchant, evidence="")
        assert (other.response_code, other.decision) == ("00", "won")  # decided once
        lo = await client.represent(
            lost_id, eur(3_000), merchant_id=merchant, evidence="  receipt   attached  "
        )
        assert (lo.response_code, lo.decision) == ("05", "lost")

        second = await client.close_batch(merchant)
        assert second.approved and second.chargebacks == ()
        third = await client.close_batch(merchant)
    rows = parse_csv(settlement_path(net.data_dir, second.batch_id or "").read_text())
    got = [
        (r.network_transaction_id, r.type, r.gross, r.interchange, r.scheme_fee, r.net)
        for r in rows
    ]
    assert got == [(won_id, "chargeback_reversal", 7_000, 21, 0, 6_979)]
    assert rows[0].merchant_reference == "" and rows[0].batch_id == second.batch_id
    # Reversed once: not again in the batch after.
    assert parse_csv(settlement_path(net.data_dir, third.batch_id or "").read_text()) == []
    store = Store(net.data_dir, readonly=True)
    try:
        decided = store.get_representment(won_id)
        assert decided is not None
        assert (decided.decision, decided.batch_id) == ("won", second.batch_id)
        assert decided.evidence == long_text
        lost_rec = store.get_representment(lost_id)
        assert lost_rec is not None and lost_rec.decision == "lost"
    finally:
        store.close()


# --- restarts -------------------------------------------------------------------------------


async def test_state_survives_a_restart(own_net: Simulator) -> None:
    port = own_net.start()
    merchant = new_merchant()
    card = CardData("4111111111111111", EXPIRY)
    async with client_for(own_net) as client:
        trace = client.new_trace()
        auth = await client.authorize(
            card, eur(2_500), merchant_id=merchant, terminal_id="trm_1", trace=trace
        )
        assert auth.approved
    own_net.kill()
    own_net.start(port)
    async with client_for(own_net) as client:
        replay = await client.authorize(
            card, eur(2_500), merchant_id=merchant, terminal_id="trm_1", trace=trace
        )
        assert replay == auth  # the idempotency record survived
        assert own_net.holds(merchant) == 1
        assert (await client.capture(auth)).approved
        closed = await client.close_batch(merchant)
        assert closed.totals == BatchTotals(1, 2_500, 0, 0)
    assert own_net.terminate() == 0
    path = settlement_path(own_net.data_dir, closed.batch_id or "")
    path.unlink()  # as if the process died between commit and file
    own_net.start(port)
    assert parse_csv(path.read_text())[0].gross == 2_500  # rewritten at start-up
    async with client_for(own_net) as client:
        empty = await client.close_batch(merchant)
        assert empty.totals == BatchTotals(0, 0, 0, 0)


# --- the switch in process, on a fake clock ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _auth(stan: str, pan: str = "4111111111111111", amount: int = 1000) -> dict[str, str]:
    return {
        "t": "0100",
        "2": pan,
        "3": "000000",
        "4": spec.amount_field(amount),
        "7": "0615120000",
        "11": stan,
        "14": EXPIRY,
        "32": ACQUIRER,
        "41": "trm_1",
        "42": "mer_1",
        "49": "978",
    }


def _capture(of: dict[str, str], stan: str, amount: int) -> dict[str, str]:
    return {
        "t": "0220",
        "4": spec.amount_field(amount),
        "7": "0615120100",
        "11": stan,
        "32": ACQUIRER,
        "41": of["41"],
        "42": of["42"],
        "49": "978",
        "90": spec.OriginalData(of["t"], of["11"], of["7"], ACQUIRER).encode(),
    }


def test_switch_holds_expire(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path)
    try:
        switch = Switch(store, clock=clock, hold_ttl=timedelta(hours=1))
        auth = _auth("000001")
        r = switch.handle(auth)
        assert r is not None and r["39"] == "00" and "2" not in r  # PAN never echoed
        assert len(store.active_holds(clock.now)) == 1
        clock.now += timedelta(hours=1)
        assert store.active_holds(clock.now) == []
        late = switch.handle(_capture(auth, "000002", 1000))
        assert late is not None and (late["39"], late["44"]) == ("12", "authorization expired")
    finally:
        store.close()


def test_switch_funds_and_format_errors(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        switch = Switch(store, clock=Clock())
        debit = "4242424242424242"  # balance 5,000.00
        assert switch.handle(_auth("000001", debit, 400_000))["39"] == "00"  # type: ignore[index]
        assert switch.handle(_auth("000002", debit, 100_001))["39"] == "51"  # type: ignore[index]
        assert switch.handle(_auth("000003", debit, 100_000))["39"] == "00"  # type: ignore[index]
        missing = _auth("000004")
        del missing["49"]
        assert switch.handle(missing)["39"] == "30"  # type: ignore[index]
        bad_currency = {**_auth("000005"), "49": "999"}
        assert switch.handle(bad_currency)["39"] == "30"  # type: ignore[index]
        assert switch.handle({**_auth("000006"), "t": "0110"}) is None  # not a request
        # a format error changes nothing and is not remembered
        assert len(store.transactions()) == 3
    finally:
        store.close()


def test_cli_cardnet_cards_and_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from psp_server.__main__ import main

    assert main(["cardnet", "cards"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert {c["pan"] for c in cards} >= {"4111111111111111", NO_ANSWER, "4000000000000259"}
    store = Store(tmp_path)
    Switch(store, clock=lambda: datetime.now(UTC)).handle(_auth("000001"))
    store.close()
    assert main(["cardnet", "holds", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4111111111111111" not in out
    assert json.loads(out)[0]["pan_masked"] == "411111******1111"


def test_trace_transmission_field() -> None:
    t = Trace("000001", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert t.transmission == "0102030405"
    assert "4111111111111111" not in repr(CardData("4111111111111111", EXPIRY))


if os.name != "posix":  # pragma: no cover
    pytestmark = pytest.mark.skip("signals and process control are POSIX here")
