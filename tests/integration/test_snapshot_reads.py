"""A check across tables (``scanpay admin ledger-check``) reads one snapshot: a payment
committed while it runs is wholly in it or wholly out, never between two of its
statements. On SQLite a read transaction is one already; on PostgreSQL it runs at
REPEATABLE READ (READ COMMITTED gives each statement its own snapshot)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from psp_server.adapters import migrate
from psp_server.adapters.db import sqlite_url
from psp_server.adapters.store import SqlStore
from psp_server.service.runtime import Database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = sqlite_url(tmp_path / "snap.db")
    migrate.upgrade(url)
    d = Database(url)
    try:
        yield d
    finally:
        d.close()


def _count(store: SqlStore, quote: str) -> int:
    sql = f"SELECT count(*) FROM fx_rates WHERE quote = '{quote}'"
    return int(store.conn.exec_driver_sql(sql).scalar_one())


@pytest.mark.parametrize("snapshot", [True, False])
def test_a_snapshot_read_does_not_see_what_commits_between_its_statements(
    db: Database, snapshot: bool
) -> None:
    quote = "X" + uuid.uuid4().hex[:2].upper()

    def check(store: SqlStore) -> tuple[int, int]:
        before = _count(store, quote)
        # Another connection commits meanwhile (the writer, another replica).
        db.write_sync(lambda s: s.set_rate("EUR", quote, "1.5", datetime.now(UTC)))
        return before, _count(store, quote)

    before, after = db.read_sync(check, snapshot=snapshot)
    assert before == 0
    if snapshot or not db.is_postgres:
        assert after == 0
    else:
        assert after == 1  # READ COMMITTED: what the snapshot flag is there for
