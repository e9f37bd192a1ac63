"""PostgreSQL connections: the request path's reads take one round trip per statement
(autocommit, no ping before each use); a connection the server dropped (a restart, a
failover, an idle timeout) is replaced, for reads and for the writer, without the caller
seeing an error."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from psp_server.adapters import migrate
from psp_server.adapters.store import SqlStore
from psp_server.api import mapping
from psp_server.bootstrap import build_app, start_pg_listener
from psp_server.config import Settings
from psp_server.service.auth import MerchantPrincipal
from psp_server.service.common import Idem
from psp_server.service.merchant import CreatePayment
from psp_server.service.runtime import Database

pytestmark = pytest.mark.postgres


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


async def test_a_read_survives_the_server_dropping_its_connection(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    db = Database(postgres_url)
    try:
        pid = await db.read(lambda s: s.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        # What a database restart or an idle-connection timeout does to the pool.
        with psycopg.connect(_plain(postgres_url), autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        assert await db.read(lambda s: s.get_payment_by_token("no-such-token")) is None
        again = await db.read(lambda s: s.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        assert again != pid
    finally:
        db.close()


async def test_a_read_sends_no_transaction_around_its_statement(postgres_url: str) -> None:
    """Autocommit: the read's connection is not left in a transaction, and a read sees
    what was committed a moment before (no snapshot kept from an earlier statement)."""
    migrate.upgrade(postgres_url)
    db = Database(postgres_url)
    try:
        in_tx = await db.read(
            lambda s: s.conn.exec_driver_sql("SELECT now() <> statement_timestamp()").scalar()
        )
        # Inside a transaction now() is the transaction's start; in autocommit it is the
        # statement's own (equal up to the clock's resolution).
        assert in_tx is False
    finally:
        db.close()


async def test_a_write_survives_the_server_dropping_the_writers_connection(
    postgres_url: str,
) -> None:
    migrate.upgrade(postgres_url)
    db = Database(postgres_url)

    def backend_pid(store: SqlStore) -> int:
        return int(store.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    rate = f"{uuid.uuid4().int % 900 + 100}.25"
    try:
        pid = await db.write(backend_pid)
        with psycopg.connect(_plain(postgres_url), autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        # The batch fails on the dead connection before its COMMIT, and runs again on a
        # new one: the caller sees only the result.
        now = datetime.now(UTC)
        await db.write(lambda s: s.set_rate("EUR", "XTS", rate, now))
        assert await db.write(backend_pid) != pid
        stored = await db.read(
            lambda s: s.conn.exec_driver_sql(
                "SELECT rate FROM fx_rates WHERE base = 'EUR' AND quote = 'XTS'"
            ).scalar_one()
        )
        assert str(stored) == rate
    finally:
        db.close()


async def test_a_process_does_not_hear_its_own_events_back(
    postgres_url: str, tmp_path: Path
) -> None:
    """NOTIFY tells the other server processes of an event; this process's streams had it
    at commit, with the event itself, and get it once. Another process's event comes
    through (sequence number only: the stream reads it from the log)."""
    app = build_app(Settings(data_dir=tmp_path, db_url=postgres_url, secret=b"s" * 32))
    try:
        m = app.admin.create_merchant(
            name="Echo Shop", city="Berlin", country="DE", currency="EUR", mcc="5411"
        )
        t = app.admin.create_terminal(m.id, "T1")
        start_pg_listener(app)
        with app.bus.subscribe(m.id) as sub:
            await asyncio.sleep(0.3)  # the listener has connected
            await app.merchants.create_payment(
                MerchantPrincipal(m.id, t.terminal.id, "T1"),
                CreatePayment("E1", 500, "EUR"),
                Idem("c", uuid.uuid4().hex, "h"),
                mapping.payment_bytes,
            )
            with psycopg.connect(_plain(postgres_url), autocommit=True) as other:
                other.execute("SELECT pg_notify('scanpay_events', %s)", (f"{m.id}:7",))
            await asyncio.sleep(1.2)  # the listener polls twice a second
            got = []
            while not sub.queue.empty():
                got.append(sub.queue.get_nowait())
        assert [(n.seq, n.event is not None) for n in got] == [(1, True), (7, False)]
    finally:
        app.close()
