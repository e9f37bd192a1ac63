"""WatchPayments over a real server: replay from a cursor, live tail, resume after a
reconnect and after a server restart with no gap and no repeat, merchant isolation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest

from protos.scanpay.v1 import merchant_pb2 as m
from tests.api.helpers import (
    INVALID,
    Api,
    MerchantClient,
    api_for,
    consecutive,
    cursors,
    expect,
    status_name,
    type_name,
)
from tests.support.psp import LivePsp


@pytest.fixture(scope="module")
def api(psp: LivePsp) -> Iterator[Api]:
    with api_for(psp) as a:
        yield a


def _subscribers(psp: LivePsp, merchant_id: str) -> int:
    """Streams of this merchant subscribed to the server's event bus right now (the
    gateway's, where the streams are served by one)."""
    bus = (psp.gateway_app or psp.app).bus
    with bus._lock:
        return len(bus._subs.get(merchant_id, ()))


class Watcher:
    """A terminal's stream read in a background thread."""

    def __init__(self, psp: LivePsp, mer: MerchantClient, after_cursor: str = "") -> None:
        subscribed = _subscribers(psp, mer.merchant_id)
        self.call = mer.stub.WatchPayments(
            m.WatchPaymentsRequest(after_cursor=after_cursor), timeout=60
        )
        self.events: list[m.PaymentEvent] = []
        self.error: grpc.RpcError | None = None
        self.done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        # Wait until the server has subscribed this stream to the bus: what follows is
        # delivered live (the replay part is covered by the other tests).
        deadline = time.monotonic() + 5
        while _subscribers(psp, mer.merchant_id) <= subscribed and not self.done:
            assert time.monotonic() < deadline, "the stream never subscribed"
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            for ev in self.call:
                with self._cond:
                    self.events.append(ev)
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            self.error = exc
        with self._cond:
            self.done = True
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 10) -> list[m.PaymentEvent]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) >= n or self.done, timeout)
            assert len(self.events) >= n, (len(self.events), n, self.error)
            return list(self.events)

    def wait_closed(self, timeout: float = 10) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.done, timeout), "the stream stayed open"

    def close(self) -> list[m.PaymentEvent]:
        self.call.cancel()
        self._thread.join(10)
        return list(self.events)


def test_replay_from_cursor(api: Api) -> None:
    mer = api.merchant()
    made = [mer.create(100 * (i + 1)) for i in range(3)]
    log = mer.log()
    assert cursors(log) == [1, 2, 3]
    assert [type_name(e) for e in log] == ["CREATED"] * 3
    # Each event carries the payment as it was then, and when it happened.
    assert [e.payment for e in log] == made
    assert [e.occurred_at for e in log] == [p.created_at for p in made]

    assert mer.events(after_cursor="1", until_count=2) == log[1:]
    assert mer.events(after_cursor="2", until_count=1) == log[2:]
    assert mer.events(after_cursor="3", timeout=0.5) == []  # at the head: nothing yet


def test_live_tail(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    watcher = Watcher(psp, mer)
    try:
        a = mer.create(500)
        b = mer.create(600)
        con.pay(a.qr_payload)
        mer.cancel(b.id)
        mer.refund(a.id, 100)
        events = watcher.wait_for(5)
    finally:
        watcher.close()
    assert consecutive(events)
    assert [(type_name(e), e.payment.id) for e in events] == [
        ("CREATED", a.id),
        ("CREATED", b.id),
        ("SUCCEEDED", a.id),
        ("CANCELED", b.id),
        ("REFUNDED", a.id),
    ]
    assert [status_name(e.payment) for e in events] == [
        "PENDING",
        "PENDING",
        "SUCCEEDED",
        "CANCELED",
        "PARTIALLY_REFUNDED",
    ]
    assert events[2].payment.paid_at == events[2].occurred_at


def test_live_tail_under_concurrent_writes(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    watcher = Watcher(psp, mer)
    try:
        with ThreadPoolExecutor(8) as pool:
            made = list(pool.map(lambda i: mer.create(100 + i), range(40)))
        events = watcher.wait_for(40)
    finally:
        watcher.close()
    assert consecutive(events)
    assert sorted(e.payment.id for e in events) == sorted(p.id for p in made)


def test_expired_event_reaches_a_live_stream(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    watcher = Watcher(psp, mer)
    try:
        p = mer.create(400, expires_in_seconds=30)
        psp.clock.advance(timedelta(seconds=31))
        events = watcher.wait_for(2)  # the sweeper runs every 0.2 s in tests
    finally:
        watcher.close()
    assert [(type_name(e), e.payment.id) for e in events] == [("CREATED", p.id), ("EXPIRED", p.id)]
    assert status_name(events[1].payment) == "EXPIRED"


def test_resume_after_reconnect(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    first = Watcher(psp, mer)
    a = mer.create(100)
    b = mer.create(200)
    got = first.wait_for(2)
    first.close()
    last = got[-1].cursor

    # While the terminal is offline, things happen.
    con.pay(a.qr_payload)
    mer.cancel(b.id)
    c = mer.create(300)

    second = Watcher(psp, mer, after_cursor=last)
    try:
        d = mer.create(400)  # and live again
        resumed = second.wait_for(4)
    finally:
        second.close()
    everything = got + resumed
    assert consecutive(everything)  # no gap, no repeat
    assert [(type_name(e), e.payment.id) for e in resumed] == [
        ("SUCCEEDED", a.id),
        ("CANCELED", b.id),
        ("CREATED", c.id),
        ("CREATED", d.id),
    ]


def test_resume_across_server_restart(api: Api, psp: LivePsp) -> None:
    mer = api.merchant()
    con = api.consumer()
    watcher = Watcher(psp, mer)
    a = mer.create(100)
    con.pay(a.qr_payload)
    before = watcher.wait_for(2)

    psp.restart()
    watcher.wait_closed()
    assert watcher.error is not None
    assert watcher.error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    grpc.channel_ready_future(api.channel).result(timeout=15)

    # Committed before the restart: still there. Made after it: delivered too.
    b = mer.create(200)
    again = Watcher(psp, mer, after_cursor=before[-1].cursor)
    try:
        mer.refund(a.id, 50)
        after = again.wait_for(2)
    finally:
        again.close()
    assert consecutive(before + after)
    assert [(type_name(e), e.payment.id) for e in after] == [("CREATED", b.id), ("REFUNDED", a.id)]
    assert cursors(mer.log()) == [1, 2, 3, 4]
    assert psp.app.admin.ledger_check() == []


def test_replay_beyond_one_batch(api: Api) -> None:
    """The replay reads the log in batches of 500: the boundary loses and repeats nothing."""
    mer = api.merchant()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: mer.create(100), range(503)))
    events = mer.events(until_count=503, timeout=20)
    assert consecutive(events)
    assert len({e.payment.id for e in events}) == 503
    tail = mer.events(after_cursor="499", until_count=4)
    assert cursors(tail) == [500, 501, 502, 503]


def test_merchant_isolation(api: Api, psp: LivePsp) -> None:
    a = api.merchant(name="Shop A")
    b = api.merchant(name="Shop B")
    watch_a, watch_b = Watcher(psp, a), Watcher(psp, b)
    try:
        a_payments = [a.create(100 + i) for i in range(3)]
        b_payment = b.create(999)
        events_a = watch_a.wait_for(3)
        events_b = watch_b.wait_for(1)
        time.sleep(0.3)  # nothing else may arrive for B
        assert len(watch_b.events) == 1
    finally:
        watch_a.close()
        watch_b.close()
    assert [e.payment.id for e in events_a] == [p.id for p in a_payments]
    assert [(e.cursor, e.payment.id) for e in events_b] == [("1", b_payment.id)]
    assert all(e.payment.merchant_id == b.merchant_id for e in b.log())
    # A's cursor 3 means nothing to B, whose log has one event.
    expect(INVALID, "INVALID_CURSOR", b.events, "3")


@pytest.mark.parametrize(
    "cursor",
    ["abc", "-1", "1.5", " 1", "1 ", "0x10", "1" * 19, "²", "١", "𝟙", "999999"],
    ids=[
        "letters",
        "negative",
        "decimal",
        "lead-space",
        "trail-space",
        "hex",
        "too-long",
        "superscript",
        "arabic-indic",
        "math-digit",
        "ahead-of-log",
    ],
)
def test_invalid_cursor(api: Api, cursor: str) -> None:
    mer = api.merchant()
    mer.create(100)
    expect(INVALID, "INVALID_CURSOR", mer.events, cursor)
    assert mer.events("1", timeout=0.2) == []  # "1" is at the head: valid, nothing new
