"""The card rail through the PSP's gRPC API, against the real simulator process over TCP:
every test card, authorize/capture/void, refunds, idempotency, events, the ledger, a lost
answer reversed on recovery, and the circuit breaker."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from protos.scanpay.v1 import common_pb2 as c
from protos.scanpay.v1 import merchant_pb2 as m
from protos.scanpay.v1 import merchant_pb2_grpc
from psp_server.config import Settings
from psp_server.domain.cards import format_track1, format_track2
from tests.support.cardnet import CardnetProcess
from tests.support.psp import LivePsp, MerchantCreds, bearer

EXPIRY = "3012"
NO_ANSWER = "4000000000000119"

# card -> (status, response code)
CARDS: dict[str, tuple[int, str]] = {
    "4111111111111111": (c.PAYMENT_STATUS_SUCCEEDED, "00"),
    "4242424242424242": (c.PAYMENT_STATUS_SUCCEEDED, "00"),
    "5555555555554444": (c.PAYMENT_STATUS_SUCCEEDED, "00"),
    "5200828282828210": (c.PAYMENT_STATUS_SUCCEEDED, "00"),
    "378282246310005": (c.PAYMENT_STATUS_SUCCEEDED, "00"),
    "6011111111111117": (c.PAYMENT_STATUS_SUCCEEDED, "00"),
    "4000000000000002": (c.PAYMENT_STATUS_DECLINED, "05"),
    "4000000000009995": (c.PAYMENT_STATUS_DECLINED, "51"),
    "4000000000000069": (c.PAYMENT_STATUS_DECLINED, "54"),
    "4000000000009987": (c.PAYMENT_STATUS_DECLINED, "41"),
    "4000000000009979": (c.PAYMENT_STATUS_DECLINED, "43"),
    "4000000000000259": (c.PAYMENT_STATUS_SUCCEEDED, "00"),
}


def track(pan: str, expiry: str = EXPIRY) -> str:
    return format_track1(pan, "DOE/JANE", expiry, "101", "0000000") + format_track2(
        pan, expiry, "101", "0000"
    )


def card_settings(data: Path, sim: CardnetProcess, **kw: Any) -> Settings:
    s = Settings(
        data_dir=data,
        cardnet=sim.address,
        cardnet_timeout=1.0,
        cardnet_failure_threshold=3,
        cardnet_reset_timeout=0.5,
        reversal_interval=0.2,
        settlement_dir=sim.settlement_dir,
    )
    for k, v in kw.items():
        setattr(s, k, v)
    return s


class Till:
    """One merchant's terminal over real gRPC."""

    def __init__(self, psp: LivePsp, creds: MerchantCreds) -> None:
        self.psp = psp
        self.creds = creds
        self.channel = grpc.insecure_channel(psp.address)
        self.stub = merchant_pb2_grpc.MerchantServiceStub(self.channel)
        self.md = bearer(creds.api_key)

    def close(self) -> None:
        self.channel.close()

    def swipe(
        self,
        pan: str,
        amount: int = 1250,
        *,
        action: int = m.CARD_ACTION_SALE,
        key: str | None = None,
        data: str | None = None,
        order_id: str = "ORDER-1",
    ) -> c.Payment:
        return self.stub.SwipeCard(
            m.SwipeCardRequest(
                track_data=data if data is not None else track(pan),
                amount=c.Money(amount_minor=amount, currency="EUR"),
                order_id=order_id,
                action=action,
                idempotency_key=key or uuid.uuid4().hex,
            ),
            metadata=self.md,
            timeout=30,
        )

    def capture(self, pid: str, amount: int | None = None, key: str | None = None) -> c.Payment:
        req = m.CapturePaymentRequest(payment_id=pid, idempotency_key=key or uuid.uuid4().hex)
        if amount is not None:
            req.amount.CopyFrom(c.Money(amount_minor=amount, currency="EUR"))
        return self.stub.CapturePayment(req, metadata=self.md, timeout=30)

    def void(self, pid: str, key: str | None = None) -> c.Payment:
        return self.stub.VoidPayment(
            m.VoidPaymentRequest(payment_id=pid, idempotency_key=key or uuid.uuid4().hex),
            metadata=self.md,
            timeout=30,
        )

    def refund(self, pid: str, amount: int, key: str | None = None) -> c.Payment:
        return self.stub.RefundPayment(
            m.RefundPaymentRequest(
                payment_id=pid,
                amount=c.Money(amount_minor=amount, currency="EUR"),
                reason="returned",
                idempotency_key=key or uuid.uuid4().hex,
            ),
            metadata=self.md,
            timeout=30,
        )

    def close_batch(self, key: str | None = None) -> m.Batch:
        return self.stub.CloseBatch(
            m.CloseBatchRequest(idempotency_key=key or uuid.uuid4().hex),
            metadata=self.md,
            timeout=30,
        )

    def events(self, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        got = self.psp.watch_events(self.creds.api_key, until_count=count, timeout=timeout)
        return [(t, pid) for _, t, pid in got]

    def balances(self) -> dict[str, int]:
        from sqlalchemy import select

        from psp_server.adapters import tables as t

        def q(store: Any) -> dict[str, int]:
            a = t.accounts.c
            rows = store.conn.execute(
                select(a.type, a.balance_minor).where(a.owner_id == self.creds.merchant_id)
            ).all()
            return {r.type: int(r.balance_minor) for r in rows}

        out: dict[str, int] = self.psp.app.db.read_sync(q)
        return out


def failure(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kw)
    exc: Any = info.value
    status = rpc_status.from_call(exc)
    reason = ""
    if status is not None:
        for d in status.details:
            if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                ei = error_details_pb2.ErrorInfo()
                d.Unpack(ei)
                reason = ei.reason
    return exc.code(), reason


def wait_for(check: Callable[[], bool], what: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


# sqlite-gateway: the layout of psp serve --gateways (the card rail in the core, every
# call through a gateway).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "sqlite-gateway"]


@contextlib.contextmanager
def backend_url(request: pytest.FixtureRequest, backend: str) -> Iterator[str | None]:
    """None: SQLite in the data directory; else a PostgreSQL database of its own (a card
    network simulator numbers its batches from 1, so PSPs talking to different simulators
    must not share a database), dropped afterwards."""
    if backend != "postgres":
        yield None
        return
    import psycopg

    base: str = request.getfixturevalue("postgres_url")
    name = f"{base.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:8]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextlib.contextmanager
def card_server(
    request: pytest.FixtureRequest, data: Path, cardnet: CardnetProcess
) -> Iterator[LivePsp]:
    """A PSP with the card rail on the backend ``request.param`` names; its ledger is
    checked when the test is done."""
    with backend_url(request, request.param) as url:
        psp = LivePsp(
            data,
            url,
            settings=card_settings(data, cardnet),
            gateway=request.param == "sqlite-gateway",
        ).start()
        try:
            yield psp
            assert psp.app.admin.ledger_check() == []
        finally:
            psp.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def card_psp(
    request: pytest.FixtureRequest,
    cardnet: CardnetProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LivePsp]:
    data = tmp_path_factory.mktemp(f"psp-cards-{request.param}")
    with card_server(request, data, cardnet) as psp:
        yield psp


@pytest.fixture
def till(card_psp: LivePsp) -> Iterator[Till]:
    t = Till(card_psp, card_psp.create_merchant(discount_rate_bps=100))
    yield t
    t.close()


# -- every test card ------------------------------------------------------------------


@pytest.mark.parametrize("pan", sorted(CARDS))
def test_every_test_card_sale(till: Till, cardnet: CardnetProcess, pan: str) -> None:
    status, code = CARDS[pan]
    p = till.swipe(pan, 8000)
    assert p.status == status
    assert p.method == c.PAYMENT_METHOD_CARD
    assert p.card.response_code == code
    assert p.card.pan_masked == pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
    assert p.card.last4 == pan[-4:]
    assert p.card.response_text
    if status == c.PAYMENT_STATUS_SUCCEEDED:
        assert p.card.auth_code and p.card.network_transaction_id
        assert p.fee.amount_minor == 80  # the PSP's markup, 1 %
        assert till.balances()["merchant_pending"] == 8000 - 80
    else:
        assert till.balances().get("merchant_pending", 0) == 0
    event = "PAYMENT_EVENT_TYPE_SUCCEEDED" if code == "00" else "PAYMENT_EVENT_TYPE_DECLINED"
    assert till.events(1) == [(event, p.id)]
    assert cardnet.holds(till.creds.merchant_id) == 0


@pytest.mark.parametrize("pan", sorted(CARDS))
def test_every_test_card_authorize(till: Till, cardnet: CardnetProcess, pan: str) -> None:
    status, code = CARDS[pan]
    p = till.swipe(pan, 500, action=m.CARD_ACTION_AUTHORIZE)
    assert p.card.response_code == code
    if status == c.PAYMENT_STATUS_SUCCEEDED:
        assert p.status == c.PAYMENT_STATUS_AUTHORIZED
        assert cardnet.holds(till.creds.merchant_id) == 1
        assert till.balances()["card_holds_payable"] == 500
    else:
        assert p.status == c.PAYMENT_STATUS_DECLINED
        assert cardnet.holds(till.creds.merchant_id) == 0


def test_no_answer_card_is_reversed_and_reported(till: Till, cardnet: CardnetProcess) -> None:
    code, reason = failure(till.swipe, NO_ANSWER, 700, action=m.CARD_ACTION_AUTHORIZE)
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "CARD_NETWORK_TIMEOUT")
    # The issuer held it when the (lost) answer was due; the reversal released it.
    assert cardnet.holds(till.creds.merchant_id) == 0
    assert set(cardnet.statuses(till.creds.merchant_id).values()) == {"reversed"}
    assert till.psp.app.cards.client.pending_reversals() == []
    # Nothing recorded: no payment, no ledger movement.
    assert till.balances() == {}


# -- two-phase: authorize, capture, void ---------------------------------------------


def test_authorize_then_capture(till: Till, cardnet: CardnetProcess) -> None:
    auth = till.swipe("4111111111111111", 2000, action=m.CARD_ACTION_AUTHORIZE)
    assert auth.status == c.PAYMENT_STATUS_AUTHORIZED
    key = uuid.uuid4().hex
    cap = till.capture(auth.id, 1500, key=key)
    assert cap.status == c.PAYMENT_STATUS_SUCCEEDED
    assert cap.amount.amount_minor == 1500
    assert cap.fee.amount_minor == 15
    again = till.capture(auth.id, 1500, key=key)  # a retry: the same answer, once
    assert again == cap
    assert failure(till.capture, auth.id, 1500) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_NOT_CAPTURABLE",
    )
    assert cardnet.holds(till.creds.merchant_id) == 0
    assert set(cardnet.statuses(till.creds.merchant_id).values()) == {"captured"}
    b = till.balances()
    assert b["card_holds_payable"] == 0
    assert b["merchant_pending"] == 1500 - 15
    assert [t for t, _ in till.events(2)] == [
        "PAYMENT_EVENT_TYPE_AUTHORIZED",
        "PAYMENT_EVENT_TYPE_SUCCEEDED",
    ]


def test_capture_more_than_authorized_is_refused(till: Till) -> None:
    auth = till.swipe("5555555555554444", 1000, action=m.CARD_ACTION_AUTHORIZE)
    assert failure(till.capture, auth.id, 1001) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CAPTURE_EXCEEDS_AUTHORIZED",
    )


def test_void_releases_the_hold(till: Till, cardnet: CardnetProcess) -> None:
    auth = till.swipe("4111111111111111", 900, action=m.CARD_ACTION_AUTHORIZE)
    assert cardnet.holds(till.creds.merchant_id) == 1
    key = uuid.uuid4().hex
    v = till.void(auth.id, key=key)
    assert v.status == c.PAYMENT_STATUS_VOIDED
    assert till.void(auth.id, key=key) == v
    assert cardnet.holds(till.creds.merchant_id) == 0
    assert till.balances()["card_holds_payable"] == 0
    assert failure(till.capture, auth.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_NOT_CAPTURABLE",
    )
    assert [t for t, _ in till.events(2)] == [
        "PAYMENT_EVENT_TYPE_AUTHORIZED",
        "PAYMENT_EVENT_TYPE_VOIDED",
    ]


def test_void_a_sale_before_the_batch_closes(till: Till, cardnet: CardnetProcess) -> None:
    sale = till.swipe("4111111111111111", 3000)
    v = till.void(sale.id)
    assert v.status == c.PAYMENT_STATUS_VOIDED
    assert set(cardnet.statuses(till.creds.merchant_id).values()) == {"reversed"}
    b = till.balances()
    assert b["merchant_pending"] == 0


# -- idempotency and bad input ---------------------------------------------------------


def test_swipe_is_idempotent(till: Till, cardnet: CardnetProcess) -> None:
    key = uuid.uuid4().hex
    a = till.swipe("4111111111111111", 1234, action=m.CARD_ACTION_AUTHORIZE, key=key)
    b = till.swipe("4111111111111111", 1234, action=m.CARD_ACTION_AUTHORIZE, key=key)
    assert a == b
    assert cardnet.holds(till.creds.merchant_id) == 1  # one hold, not two
    assert len(till.events(2, timeout=1.0)) == 1
    assert failure(
        till.swipe, "4111111111111111", 999, action=m.CARD_ACTION_AUTHORIZE, key=key
    ) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (track("4111111111111112"), "CARD_LUHN_FAILED"),
        (track("4111111111111111", "2001"), "CARD_EXPIRED"),
        ("%B4111111111111111^DOE", "CARD_READ_ERROR"),
        ("", "CARD_READ_ERROR"),
    ],
)
def test_bad_swipes_get_a_clear_reason(till: Till, data: str, reason: str) -> None:
    code, got = failure(till.swipe, "", data=data)
    assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert till.balances() == {}


def test_unknown_action_and_currency(till: Till) -> None:
    assert failure(till.swipe, "4111111111111111", action=m.CARD_ACTION_UNSPECIFIED) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ACTION",
    )


# -- refunds -------------------------------------------------------------------------


def test_card_refunds(till: Till, cardnet: CardnetProcess) -> None:
    sale = till.swipe("4111111111111111", 5000)
    key = uuid.uuid4().hex
    r1 = till.refund(sale.id, 2000, key=key)
    assert r1.status == c.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert till.refund(sale.id, 2000, key=key) == r1
    r2 = till.refund(sale.id, 3000)
    assert r2.status == c.PAYMENT_STATUS_REFUNDED
    assert r2.refunded.amount_minor == 5000
    assert failure(till.refund, sale.id, 1) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_NOT_REFUNDABLE",
    )
    types = [t for t, _ in till.events(3)]
    assert types == ["PAYMENT_EVENT_TYPE_SUCCEEDED"] + ["PAYMENT_EVENT_TYPE_REFUNDED"] * 2


# -- without a network configured ------------------------------------------------------


def test_without_cardnet_card_rpcs_are_unimplemented(live_psp: LivePsp) -> None:
    t = Till(live_psp, live_psp.create_merchant())
    try:
        assert failure(t.swipe, "4111111111111111") == (
            grpc.StatusCode.UNIMPLEMENTED,
            "CARD_RAIL_UNAVAILABLE",
        )
    finally:
        t.close()


# -- the network going away ------------------------------------------------------------


@pytest.fixture
def own_net(tmp_path: Path) -> Iterator[CardnetProcess]:
    sim = CardnetProcess(tmp_path / "net").start()
    try:
        yield sim
    finally:
        sim.close()


def test_killed_between_request_and_answer_reversed_on_recovery(
    tmp_path: Path, own_net: CardnetProcess
) -> None:
    s = card_settings(tmp_path / "psp", own_net, cardnet_timeout=3.0)
    with LivePsp(tmp_path / "psp", settings=s) as psp:
        t = Till(psp, psp.create_merchant())
        mid = t.creds.merchant_id
        try:
            import threading

            out: dict[str, Any] = {}

            def call() -> None:
                out["r"] = failure(t.swipe, NO_ANSWER, 4200, action=m.CARD_ACTION_AUTHORIZE)

            th = threading.Thread(target=call)
            th.start()
            wait_for(lambda: own_net.holds(mid) == 1, "the issuer to hold")
            own_net.kill()  # between the request and its (never coming) answer
            th.join(30)
            assert out["r"] == (grpc.StatusCode.UNAVAILABLE, "CARD_NETWORK_TIMEOUT")
            # The reversal could not be delivered: it waits in the PSP's database.
            assert len(psp.app.cards.client.pending_reversals()) == 1
            own_net.start()  # same port, same data: the hold is still there
            assert own_net.holds(mid) == 1
            wait_for(lambda: own_net.holds(mid) == 0, "the reversal on recovery")
            wait_for(lambda: psp.app.cards.client.pending_reversals() == [], "the queue")
            assert set(own_net.statuses(mid).values()) == {"reversed"}
            assert t.balances() == {}
            # And the network works again for new payments.
            assert t.swipe("4111111111111111", 100).status == c.PAYMENT_STATUS_SUCCEEDED
        finally:
            t.close()
        assert psp.app.admin.ledger_check() == []


def test_breaker_opens_under_failures_and_closes_after(
    tmp_path: Path, own_net: CardnetProcess
) -> None:
    s = card_settings(tmp_path / "psp", own_net)
    with LivePsp(tmp_path / "psp", settings=s) as psp:
        t = Till(psp, psp.create_merchant())
        try:
            assert t.swipe("4111111111111111", 100).status == c.PAYMENT_STATUS_SUCCEEDED
            own_net.kill()
            for _ in range(3):
                assert failure(t.swipe, "4111111111111111", 100) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "CARD_NETWORK_UNAVAILABLE",
                )
            breaker = psp.app.cards.client.breaker
            assert breaker.state.value == "open"
            start = time.monotonic()
            assert failure(t.swipe, "4111111111111111", 100) == (
                grpc.StatusCode.UNAVAILABLE,
                "CARD_NETWORK_UNAVAILABLE",
            )
            assert time.monotonic() - start < 0.5  # failed fast
            own_net.start()
            time.sleep(0.6)  # past the reset timeout: half-open
            assert t.swipe("4111111111111111", 100).status == c.PAYMENT_STATUS_SUCCEEDED
            assert breaker.state.value == "closed"
        finally:
            t.close()
        assert psp.app.admin.ledger_check() == []


# -- a stop between the network's answer and the booking ---------------------------------


class Crash(RuntimeError):
    """Stands for the PSP dying after the network answered, before job 2 committed."""


def crash_once(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, int]:
    """Make ``CardServices.<name>`` (a booking step, inside job 2) fail on its first call:
    the transaction rolls back, as if the process had stopped there."""
    from psp_server.service.cards import CardServices

    real = getattr(CardServices, name)
    calls = {"n": 0}

    def fake(self: Any, *args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Crash("stopped before booking")
        return real(self, *args, **kw)

    monkeypatch.setattr(CardServices, name, fake)
    return calls


@pytest.fixture(params=BACKENDS)
def crash_psp(
    request: pytest.FixtureRequest, tmp_path: Path, cardnet: CardnetProcess
) -> Iterator[LivePsp]:
    """A PSP of its own (it is restarted), on SQLite or PostgreSQL."""
    data = tmp_path / "psp"
    with card_server(request, data, cardnet) as psp:
        yield psp


def batches_of(psp: LivePsp, merchant_id: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from psp_server.adapters import tables as t

    def q(store: Any) -> list[dict[str, Any]]:
        b = t.card_batches.c
        rows = store.conn.execute(select(t.card_batches).where(b.merchant_id == merchant_id)).all()
        return [dict(r._mapping) for r in rows]

    out: list[dict[str, Any]] = psp.app.db.read_sync(q)
    return out


def _day(t: Till) -> tuple[c.Payment, c.Payment]:
    sale = t.swipe("4111111111111111", 8000)
    auth = t.swipe("5555555555554444", 3000, action=m.CARD_ACTION_AUTHORIZE)
    t.capture(auth.id, 2000)
    t.refund(sale.id, 1000)
    return sale, auth


def _assert_one_batch(t: Till, batch: m.Batch) -> None:
    got = batches_of(t.psp, t.creds.merchant_id)
    assert [b["id"] for b in got] == [batch.id]
    assert batch.count == 3  # two payments and the refund
    b = t.balances()
    assert b["merchant_pending"] == 0
    assert b["merchant"] == (8000 - 80) + (2000 - 20) - (1000 - 10)
    assert t.psp.app.admin.ledger_check() == []
    # The open batch is empty now: closing again books an empty batch, not the day twice.
    again = t.close_batch()
    assert again.id != batch.id and again.count == 0
    assert t.balances()["merchant"] == b["merchant"]


def test_batch_close_answered_but_not_booked_retry_books_it_once(
    crash_psp: LivePsp, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Till(crash_psp, crash_psp.create_merchant(discount_rate_bps=100))
    try:
        _day(t)
        calls = crash_once(monkeypatch, "_book_batch")
        key = uuid.uuid4().hex
        code, _ = failure(t.close_batch, key)
        assert code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        assert batches_of(crash_psp, t.creds.merchant_id) == []
        # A close with another key meanwhile must not open a second batch on the network.
        assert failure(t.close_batch) == (grpc.StatusCode.UNAVAILABLE, "REQUEST_IN_PROGRESS")
        batch = t.close_batch(key)  # same key -> same trace -> the network's same answer
        assert calls["n"] == 2
        assert t.close_batch(key) == batch
        _assert_one_batch(t, batch)
    finally:
        t.close()


def test_batch_close_left_sent_is_booked_at_start(
    crash_psp: LivePsp, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Till(crash_psp, crash_psp.create_merchant(discount_rate_bps=100))
    try:
        _day(t)
        crash_once(monkeypatch, "_book_batch")
        key = uuid.uuid4().hex
        failure(t.close_batch, key)
        crash_psp.restart()  # the start-up recovery re-sends the close and books it
        wait_for(lambda: len(batches_of(crash_psp, t.creds.merchant_id)) == 1, "the booking")
        batch = t.close_batch(key)  # the client's retry gets that batch
        assert batch.id == batches_of(crash_psp, t.creds.merchant_id)[0]["id"]
        assert t.close_batch(key) == batch
        _assert_one_batch(t, batch)
    finally:
        t.close()


def test_refund_answered_but_not_booked(
    crash_psp: LivePsp, cardnet: CardnetProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retried by the client (same key) and recovered at start: each refund reaches the
    network once and is booked once."""
    t = Till(crash_psp, crash_psp.create_merchant(discount_rate_bps=100))
    mid = t.creds.merchant_id
    try:
        sale = t.swipe("4111111111111111", 5000)
        crash_once(monkeypatch, "_book_refund")
        k1 = uuid.uuid4().hex
        failure(t.refund, sale.id, 2000, k1)
        r1 = t.refund(sale.id, 2000, k1)  # re-sent with its trace, booked once
        assert r1.status == c.PAYMENT_STATUS_PARTIALLY_REFUNDED
        assert r1.refunded.amount_minor == 2000
        assert len(cardnet.statuses(mid)) == 2  # the sale and one refund

        monkeypatch.undo()
        crash_once(monkeypatch, "_book_refund")
        k2 = uuid.uuid4().hex
        failure(t.refund, sale.id, 500, k2)
        crash_psp.restart()

        def refunded() -> int:
            got = t.stub.GetPayment(m.GetPaymentRequest(payment_id=sale.id), metadata=t.md)
            return int(got.refunded.amount_minor)

        wait_for(lambda: refunded() == 2500, "the refund booked at start")
        r2 = t.refund(sale.id, 500, k2)
        assert r2.refunded.amount_minor == 2500
        assert len(cardnet.statuses(mid)) == 3
        assert t.balances()["merchant_pending"] == 5000 - 50
        types = [e for e, _ in t.events(4)]
        assert types == ["PAYMENT_EVENT_TYPE_SUCCEEDED"] + ["PAYMENT_EVENT_TYPE_REFUNDED"] * 2
    finally:
        t.close()


def test_capture_answered_but_not_booked_is_booked_at_start(
    crash_psp: LivePsp, cardnet: CardnetProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Till(crash_psp, crash_psp.create_merchant(discount_rate_bps=100))
    mid = t.creds.merchant_id
    try:
        auth = t.swipe("4111111111111111", 3000, action=m.CARD_ACTION_AUTHORIZE)
        crash_once(monkeypatch, "_book_capture")
        key = uuid.uuid4().hex
        failure(t.capture, auth.id, 2500, key)
        assert set(cardnet.statuses(mid).values()) == {"captured"}
        crash_psp.restart()

        def status() -> int:
            got = t.stub.GetPayment(m.GetPaymentRequest(payment_id=auth.id), metadata=t.md)
            return int(got.status)

        wait_for(lambda: status() == c.PAYMENT_STATUS_SUCCEEDED, "the capture booked at start")
        cap = t.capture(auth.id, 2500, key)  # the client's retry: the payment, once
        assert cap.status == c.PAYMENT_STATUS_SUCCEEDED and cap.amount.amount_minor == 2500
        assert t.capture(auth.id, 2500, key) == cap
        b = t.balances()
        assert b["card_holds_payable"] == 0
        assert b["merchant_pending"] == 2500 - 25
        assert [e for e, _ in t.events(2)] == [
            "PAYMENT_EVENT_TYPE_AUTHORIZED",
            "PAYMENT_EVENT_TYPE_SUCCEEDED",
        ]
    finally:
        t.close()


# -- PCI DSS: nothing stored or logged in clear ------------------------------------------


def test_no_full_pan_or_track_in_the_database_or_logs(
    tmp_path: Path, own_net: CardnetProcess
) -> None:
    import logging

    log_file = tmp_path / "psp.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    data = tmp_path / "psp"
    try:
        s = card_settings(data, own_net)
        with LivePsp(data, settings=s) as psp:
            t = Till(psp, psp.create_merchant())
            try:
                for pan in [*CARDS, NO_ANSWER]:
                    for action in (m.CARD_ACTION_SALE, m.CARD_ACTION_AUTHORIZE):
                        try:
                            p = t.swipe(pan, 1000, action=action)
                        except grpc.RpcError:
                            continue
                        if p.status == c.PAYMENT_STATUS_AUTHORIZED:
                            t.capture(p.id)
                sale = t.swipe("4111111111111111", 2000)
                t.refund(sale.id, 500)
                t.void(t.swipe("5555555555554444", 300, action=m.CARD_ACTION_AUTHORIZE).id)
                t.close_batch()
                # A bad swipe's error must not echo the card either.
                with pytest.raises(grpc.RpcError) as bad:
                    t.swipe("", data=track("4111111111111112"))
                assert "4111111111111112" not in (bad.value.details() or "")
            finally:
                t.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    secrets = {pan for pan in [*CARDS, NO_ANSWER, "4111111111111112"]}
    secrets |= {track(pan) for pan in CARDS}
    secrets |= {format_track2(pan, EXPIRY, "101", "0000")[1:-1] for pan in CARDS}  # field 35
    files = [p for p in data.rglob("*") if p.is_file()] + [log_file]
    assert any(p.name == "psp.db" for p in files)
    assert log_file.stat().st_size > 0
    for f in files:
        blob = f.read_bytes()
        for secret in secrets:
            assert secret.encode() not in blob, f"{f.name} holds card data"
