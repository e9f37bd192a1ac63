"""The request path's reads on PostgreSQL: one round trip per statement (autocommit, no
ping before each use), and a connection the server dropped is replaced without the caller
seeing an error."""

from __future__ import annotations

import psycopg
import pytest

from psp_server.adapters import migrate
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
