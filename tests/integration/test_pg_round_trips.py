"""On PostgreSQL every statement is a round trip to the server, and the writer runs a
batch's jobs one after another: the trips per sale bound the payments per second. These
tests count what the writer's connection sends for a sale (psycopg's protocol trace), and
check that writes sent together with a later statement still fail and roll back with
their job."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

from protos.scanpay.v1 import common_pb2
from psp_server.adapters.store import SqlStore
from psp_server.api import mapping
from psp_server.bootstrap import App, build_app
from psp_server.config import Settings
from psp_server.domain.parties import Activity
from psp_server.service.auth import ConsumerPrincipal, MerchantPrincipal
from psp_server.service.common import Idem
from psp_server.service.merchant import CreatePayment
from psp_server.service.wallet import PayCommand

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def app(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    a = build_app(
        Settings(data_dir=tmp_path_factory.mktemp("trips"), db_url=postgres_url, secret=b"s" * 32)
    )
    try:
        yield a
    finally:
        a.close()


def _idem(scope: str) -> Idem:
    return Idem(scope, uuid.uuid4().hex, uuid.uuid4().hex)


def _shop_and_payer(app: App) -> tuple[MerchantPrincipal, ConsumerPrincipal]:
    m = app.admin.create_merchant(
        name="Trip Shop", city="Berlin", country="DE", currency="EUR", mcc="5411"
    )
    t = app.admin.create_terminal(m.id, "T1")
    c = app.admin.create_consumer(
        email=f"trips-{uuid.uuid4().hex[:8]}@example.com",
        password="password1",
        currency="EUR",
        kyc_tier=3,
    )
    app.admin.top_up(c.id, 50_000, "EUR")
    return MerchantPrincipal(m.id, t.terminal.id, "T1"), ConsumerPrincipal(c.id)


async def _sale(app: App, shop: MerchantPrincipal, payer: ConsumerPrincipal, n: int) -> None:
    blob = await app.merchants.create_payment(
        shop,
        CreatePayment(f"T{n}-{uuid.uuid4().hex[:6]}", 500, "EUR"),
        _idem("c"),
        mapping.payment_bytes,
    )
    p = common_pb2.Payment.FromString(blob)
    q = await app.wallets.resolve_qr(payer, p.qr_payload)
    await app.wallets.pay(payer, PayCommand(quote_id=q.quote_id), _idem("p"), mapping.receipt_bytes)


def test_a_sale_costs_the_writer_few_round_trips(app: App, tmp_path: Path) -> None:
    shop, payer = _shop_and_payer(app)

    async def run() -> str:
        for n in range(8):  # the writer connected, its statements prepared (after 5 uses)
            await _sale(app, shop, payer, -n)
        conn = app.db.writer._conn
        assert conn is not None
        pgconn = conn.connection.dbapi_connection.pgconn  # type: ignore[union-attr]
        trace = tmp_path / "trace.txt"
        with trace.open("w") as f:
            pgconn.trace(f.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                for n in range(1, 6):  # one at a time: a batch per job
                    await _sale(app, shop, payer, n)
            finally:
                pgconn.untrace()
        return trace.read_text()

    sent = [line.split("\t") for line in asyncio.run(run()).splitlines()]
    # A round trip ends with a Sync (extended protocol) or is a simple Query.
    trips = sum(1 for f in sent if f[0] == "F" and len(f) > 2 and f[2] in ("Sync", "Query"))
    per_sale = trips / 5
    # Two writer jobs per sale, each in its own batch here (BEGIN, the lock with the
    # savepoint, COMMIT), CreatePayment 3 statements, Pay 8: 17. Before the statements
    # were sent together it took 33.
    assert per_sale <= 17, f"{per_sale} round trips per sale"


def test_writes_sent_with_a_later_statement_fail_and_roll_back_with_their_job(app: App) -> None:
    _, payer = _shop_and_payer(app)
    act_id = f"txn_{uuid.uuid4().hex[:20]}"
    now = datetime.now(UTC)

    def activity(n: int) -> Activity:
        return Activity(
            id=act_id,
            consumer_id=payer.consumer_id,
            kind="payment",
            amount_minor=-n,
            currency="EUR",
            merchant_name="Trip Shop",
            payment_id=None,
            description=f"try {n}",
            created_at=now,
        )

    async def run() -> None:
        def twice(store: SqlStore) -> None:
            with store.deferring():
                store.insert_activity(activity(1))
                store.insert_activity(activity(2))  # the same id: refused
                store.spent_on(payer.consumer_id, "2026-01-01")  # they travel with this
            raise AssertionError("not reached")

        # (the store's hot path runs on the DBAPI cursor: psycopg's own error)
        with pytest.raises(psycopg.errors.UniqueViolation):
            await app.db.write(twice)
        rows = await app.db.read(lambda s: s.list_activity(payer.consumer_id, None, 10))
        assert [a.id for a in rows if a.id == act_id] == []  # the first rolled back too

        def once(store: SqlStore) -> None:
            with store.deferring():
                store.insert_activity(activity(3))  # nothing after: sent as the block ends

        await app.db.write(once)
        rows = await app.db.read(lambda s: s.list_activity(payer.consumer_id, None, 10))
        assert [a.description for a in rows if a.id == act_id] == ["try 3"]

    asyncio.run(run())
