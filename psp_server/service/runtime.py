"""How use cases reach the database: writes through the group-commit writer, reads on a
pool, both off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine

from psp_server.adapters.db import (
    GroupCommitWriter,
    connection_lost,
    make_engine,
    make_pg_read_engine,
)
from psp_server.adapters.store import SqlStore, StaleWrite

T = TypeVar("T")


class Retry(Exception):
    """Raised inside a job to have it run again (lost a race; the winner committed)."""


class Database:
    def __init__(self, url: str, *, max_batch: int = 128, commit_delay: float = 0.0) -> None:
        self.url = url
        self.write_engine: Engine = make_engine(url, writer=True)
        self.read_engine: Engine = make_engine(url, writer=False)
        self.writer = GroupCommitWriter(
            self.write_engine, max_batch=max_batch, commit_delay=commit_delay
        )
        self.inline_reads = self.read_engine.dialect.name == "sqlite"
        self._inline: Connection | None = None
        self._pg_reads: Engine | None = make_pg_read_engine(url) if self.is_postgres else None

    @property
    def is_postgres(self) -> bool:
        return self.read_engine.dialect.name == "postgresql"

    def _job(
        self, fn: Callable[[SqlStore], T]
    ) -> Callable[[Connection, list[Callable[[], None]]], T]:
        def run(conn: Connection, hooks: list[Callable[[], None]]) -> T:
            return fn(SqlStore(conn, hooks))

        return run

    def write_sync(self, fn: Callable[[SqlStore], T]) -> T:
        for attempt in range(5):
            try:
                return self.writer.submit(self._job(fn)).result()
            except (Retry, StaleWrite):
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def write(self, fn: Callable[[SqlStore], T]) -> T:
        for attempt in range(5):
            try:
                return await self.writer.submit_async(self._job(fn))
            except (Retry, StaleWrite):
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def read_sync(self, fn: Callable[[SqlStore], T], *, snapshot: bool = False) -> T:
        """``snapshot``: every statement of ``fn`` sees the database as of one moment (what
        a check across tables needs on a live system). SQLite's read transaction is one
        already; PostgreSQL's default (READ COMMITTED) gives each statement its own, so
        there it runs at REPEATABLE READ."""
        with self.read_engine.connect() as conn:
            if snapshot and self.is_postgres:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return fn(SqlStore(conn))

    async def read(self, fn: Callable[[SqlStore], T]) -> T:
        if self.inline_reads:
            # A SQLite read is a few dozen microseconds of local work, cheaper than the
            # hop to a thread and back; it never waits on the writer (WAL). One
            # connection serves the event loop's reads, one short transaction each.
            conn = self._inline
            if conn is None or conn.closed or conn.invalidated:
                conn = self._inline = self.read_engine.connect()
            # The transaction is opened and ended on the DBAPI connection itself: a third
            # of the cost of SQLAlchemy's begin() for these short reads. A store method that
            # goes through SQLAlchemy joins it (the begin hook sees it open).
            raw = conn.connection.dbapi_connection
            assert raw is not None
            try:
                raw.execute("BEGIN")
                try:
                    return fn(SqlStore(conn))
                finally:
                    if conn.in_transaction():
                        conn.rollback()  # read-only: the same as a commit
                    elif raw.in_transaction:
                        raw.rollback()
            except BaseException:
                if conn.invalidated:
                    self._inline = None
                raise
        return await asyncio.to_thread(self._read_pg, fn)

    def _read_pg(self, fn: Callable[[SqlStore], T]) -> T:
        engine = self._pg_reads
        assert engine is not None
        for attempt in range(2):
            with engine.connect() as conn:
                try:
                    return fn(SqlStore(conn))
                except Exception as exc:
                    if attempt or not connection_lost(conn, exc):
                        raise
                    # The server dropped it (a restart, an idle timeout), and with it,
                    # likely, the pool's other connections: start afresh, once.
                    if not conn.invalidated:
                        conn.invalidate()
                    engine.dispose()
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        self.writer.close()
        self.write_engine.dispose()
        self.read_engine.dispose()
        if self._pg_reads is not None:
            self._pg_reads.dispose()
