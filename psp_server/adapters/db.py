"""Engines and the group-commit writer.

All writes of one server process go through one connection. The writer takes whatever
jobs are waiting (up to ``max_batch``), runs each inside its own SAVEPOINT (a job that
fails rolls back alone), then commits once: one durable fsync for many payments. A job's
future resolves only after that commit, so nothing is reported done before it is on
disk. Reads use a separate pool of connections (SQLite WAL lets them run beside the
writer).

Where the jobs run: on SQLite, jobs submitted from the event loop run on the loop itself
(a statement there is a few microseconds of local work) and only the COMMIT, which waits
for the disk, goes to a thread; the jobs that arrive meanwhile make the next batch. Handing
every statement to a writer thread instead costs two interpreter-lock handovers per
statement, more CPU than the statements themselves. Jobs submitted from a thread, all jobs
on PostgreSQL (a network round trip per statement), and a batch that failed as a whole run
on the writer thread; one lock keeps the two apart on the connection, and while the thread
has it the loop's jobs wait (off the loop) rather than follow them to the thread.

On PostgreSQL the same code runs; several server processes (replicas) may write at once
and correctness then rests on row locks and conditional updates in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

T = TypeVar("T")
Hooks = list[Callable[[], None]]


def normalize_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _sqlite_pragmas(engine: Engine, *, writer: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns (WAL + NORMAL may lose the last ones).
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        # Each job of a group commit runs in a savepoint, and the first change to a page in
        # a savepoint copies the page to the statement journal. With temp_store=FILE that
        # journal spills to a temp file past 64 KiB: a file opened, unlinked and written
        # page by page (hundreds of pwrite calls) on every batch, on the event loop. In
        # memory it is a copy. It holds nothing that must survive a crash.
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Unless the caller already opened one on the DBAPI connection (inline reads).
        if not conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def make_engine(url: str, *, writer: bool) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        if writer:
            # One connection, used by the event loop and the commit and writer threads in
            # turn (GroupCommitWriter._conn_lock), never at once.
            engine = create_engine(
                url, poolclass=NullPool, connect_args={"check_same_thread": False}
            )
        else:
            engine = create_engine(
                url, pool_size=8, max_overflow=8, connect_args={"check_same_thread": False}
            )
        _sqlite_pragmas(engine, writer=writer)
        return engine
    return create_engine(url, pool_size=8 if not writer else 2, max_overflow=8, pool_pre_ping=True)


def make_pg_read_engine(url: str) -> Engine:
    """PostgreSQL, for the request path's reads: each statement in autocommit (at READ
    COMMITTED a transaction gives a read nothing more: every statement takes its own
    snapshot) and no ping before each use, so one round trip per statement instead of
    four (ping, BEGIN, the statement, COMMIT). A connection found dropped is invalidated
    by SQLAlchemy; the caller tries once more (``Database.read``)."""
    return create_engine(
        normalize_url(url), pool_size=8, max_overflow=8, isolation_level="AUTOCOMMIT"
    )


class Checkpointer:
    """Copies the WAL back into the database file from a thread of its own, so that a
    group commit writes only its own pages. With SQLite's automatic checkpoint, the commit
    that takes the WAL past 1,000 pages also reads them all back and writes them to the
    database file before it returns: under load about every fourth batch, half the time
    the commits took, on the path every payment waits on. The writer's connection has
    automatic checkpoints off; after a commit this thread runs a PASSIVE checkpoint (it
    never blocks the writer or a reader), at most one per ``interval``."""

    def __init__(self, path: str, interval: float = 0.05) -> None:
        self._path = path
        self._interval = interval
        self._due = threading.Event()
        self._stop = threading.Event()
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A commit happened: checkpoint soon."""
        self._due.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._due.wait()
                if self._stop.is_set():
                    break
                self._due.clear()
                try:
                    if conn is None:
                        conn = sqlite3.connect(
                            self._path, isolation_level=None, check_same_thread=False
                        )
                        conn.execute("PRAGMA synchronous=FULL")
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the next commit pokes again
                    log.warning("WAL checkpoint failed: %s", exc)
                self._stop.wait(self._interval)
        finally:
            if conn is not None:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._due.set()
        self._thread.join(timeout=30)


@dataclass
class _Job(Generic[T]):
    fn: Callable[[Connection, Hooks], T]
    # Set for jobs submitted from a thread (made only then: a Future costs a lock).
    future: Future[T] | None = None
    # Set for jobs submitted from an event loop: settled there, one wake-up per batch.
    aio: asyncio.Future[T] | None = None


class WriterStopped(RuntimeError):
    pass


class GroupCommitWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 128,
        name: str = "db-writer",
        inline: bool | None = None,
        commit_delay: float = 0.0,
    ) -> None:
        self._engine = engine
        # Jobs from the event loop run on the loop (SQLite); see the module docstring.
        self._inline = engine.dialect.name == "sqlite" if inline is None else inline
        # Held by whoever has the connection for a batch: the loop's drain (released by
        # the commit thread once the COMMIT is done) or the writer thread.
        self._conn_lock = threading.Lock()
        self._pending: list[_Job[Any]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._drain_loop: asyncio.AbstractEventLoop | None = None
        # Binds the inline path to one loop at a time: a job from another loop (another
        # thread's) goes to the writer thread, never into that loop's batches.
        self._bind = threading.Lock()
        self._committer: ThreadPoolExecutor | None = None
        # Several processes writing one SQLite file take turns through a file lock: the
        # kernel wakes the next writer the moment the lock is free, where SQLite's own
        # busy handler would sleep for up to 100 ms between tries.
        self._lock_fd: int | None = None
        self._pg = engine.dialect.name == "postgresql"
        db_path = engine.url.database if engine.dialect.name == "sqlite" else None
        self._checkpointer: Checkpointer | None = None
        if db_path and db_path != ":memory:":
            self._lock_fd = os.open(db_path + ".writelock", os.O_RDWR | os.O_CREAT, 0o600)
            self._checkpointer = Checkpointer(db_path)
        self._max_batch = max_batch
        # Seconds a batch on the loop waits for company while under load (see _drain_once).
        self._commit_delay = commit_delay
        self._last_batch = 0
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._conn: Connection | None = None
        # Set while the writer thread's COMMIT is out: if the connection goes then, whether
        # the batch committed is unknown.
        self._in_commit = False
        self._backend_pid: int | None = None
        self.batches = 0
        self.jobs = 0
        self._thread.start()

    def backend_pid(self) -> int | None:
        """PostgreSQL: the server process behind the writer's connection (it sends this
        process's NOTIFYs), once connected; from any thread."""
        return self._backend_pid

    def submit(self, fn: Callable[[Connection, Hooks], T]) -> Future[T]:
        if self._stopped.is_set():
            raise WriterStopped("the database writer is stopped")
        future: Future[T] = Future()
        self._queue.put(_Job(fn, future=future))
        return future

    def submit_async(self, fn: Callable[[Connection, Hooks], T]) -> asyncio.Future[T]:
        """Like :meth:`submit`, for a coroutine: the result is set on the caller's loop,
        and all the jobs of one batch are settled with a single wake-up of that loop."""
        if self._stopped.is_set():
            raise WriterStopped("the database writer is stopped")
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(fn, aio=loop.create_future())
        inline = False
        if self._inline:
            with self._bind:
                if self._drain_loop is None or self._drain_loop is loop:
                    inline = True
                    self._pending.append(job)
                    if self._drain_loop is None:
                        # Starts on the loop's next turn: the jobs submitted until then
                        # join its first batch.
                        self._drain_loop = loop
                        self._drainer = loop.create_task(self._drain(), name="db-writer-drain")
                        self._drainer.add_done_callback(self._drained)
        if not inline:
            self._queue.put(job)
        assert job.aio is not None
        return job.aio

    def close(self) -> None:
        if not self._stopped.is_set():
            self._stopped.set()
            if self._committer is not None:
                # A COMMIT in flight finishes (and lets go of the connection) first.
                self._committer.shutdown(wait=True)
            with self._bind:
                pending, self._pending = self._pending, []
            for job in pending:
                self._queue.put(job)  # written by the thread before it stops
            self._queue.put(None)
            self._thread.join(timeout=30)
            if self._checkpointer is not None:
                self._checkpointer.close()

    # -- on the event loop -----------------------------------------------------------

    def _commit_pool(self) -> ThreadPoolExecutor:
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="db-commit")
        return self._committer

    async def _drain(self) -> None:
        while not self._stopped.is_set():
            with self._bind:
                if not self._pending:
                    # Unbound here, in the task, in the same step that saw nothing left:
                    # a job submitted after it starts a new drain. (A done-callback runs a
                    # loop turn later; jobs submitted in between would find the loop
                    # still bound and no drain to run them.)
                    if self._drainer is asyncio.current_task():
                        self._drainer = None
                        self._drain_loop = None
                    return
            await self._drain_once()

    def _drained(self, task: asyncio.Task[None]) -> None:
        """The drain ended without unbinding itself (cancelled, also before it ever ran,
        where nothing in it would run; failed; the writer stopped): unbind the loop and
        hand what is left to the writer thread."""
        with self._bind:
            if self._drainer is not task:
                return  # it unbound itself; a new drain may already be bound
            self._drainer = None
            self._drain_loop = None
            pending, self._pending = self._pending, []
        for job in pending:
            self._queue.put(job)
        if not task.cancelled() and task.exception() is not None:
            log.error("database writer drain failed", exc_info=task.exception())

    async def _off_loop(self, acquire: Callable[[], Any], release: Callable[[], None]) -> None:
        """Wait for a lock on the commit thread, so the loop runs on meanwhile. Cancelled,
        the lock is let go of once the wait gets it."""
        wait = asyncio.get_running_loop().run_in_executor(self._commit_pool(), acquire)
        try:
            await asyncio.shield(wait)
        except asyncio.CancelledError:
            wait.add_done_callback(lambda f: release() if f.exception() is None else None)
            raise

    async def _drain_once(self) -> None:
        """One batch from ``_pending`` on the loop, committed by the commit thread."""
        if (
            self._commit_delay
            and self._last_batch > 1
            and len(self._pending) < self._max_batch // 4
        ):
            # Under load (the last batch had company) a small batch waits a moment for
            # the jobs on their way: a batch costs about as much CPU again as its jobs
            # (BEGIN, COMMIT, the WAL pages it writes, the handovers), so fewer, fuller
            # batches leave more for the requests. A lone job (one till) never waits.
            # PostgreSQL's commit_delay, for the same reason.
            await asyncio.sleep(self._commit_delay)
            if self._stopped.is_set() or not self._pending:
                return  # closed meanwhile: close() gave the jobs to the writer thread
        if not self._conn_lock.acquire(blocking=False):
            # The writer thread has the connection (jobs from a thread, or ones it runs
            # again): wait for it, then carry on here. Handing the loop's jobs over to it
            # instead would keep it busy, and every later drain would find it busy too.
            await self._off_loop(self._conn_lock.acquire, self._conn_lock.release)
        loop = asyncio.get_running_loop()
        file_locked = self._lock_fd is not None
        if self._lock_fd is not None:
            lock_fd = self._lock_fd
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Another server process is writing: wait for its turn off the loop.
                try:
                    await self._off_loop(
                        lambda: fcntl.flock(lock_fd, fcntl.LOCK_EX), lambda: self._unlock(True)
                    )
                except asyncio.CancelledError:
                    raise
                except BaseException:
                    self._conn_lock.release()
                    raise
            except BaseException:
                self._conn_lock.release()
                raise
        batch = self._pending[: self._max_batch]
        del self._pending[: len(batch)]
        self._last_batch = len(batch)
        trans: Any = None
        try:
            conn = self._connection()
            trans = conn.begin()
            outcomes = self._run_jobs(conn, batch)
        except BaseException as exc:
            if trans is not None and trans.is_active:
                with contextlib.suppress(Exception):
                    trans.rollback()
            self._unlock(file_locked)
            if isinstance(exc, Exception):
                # The batch failed as a whole: the writer thread runs it again, a job at
                # a time, with its retries.
                log.warning("batch of %d failed (%s); the writer thread retries", len(batch), exc)
                for job in batch:
                    self._queue.put(job)
                return
            raise
        try:
            commit = loop.run_in_executor(self._commit_pool(), self._commit, trans, file_locked)
        except BaseException:  # the commit thread is gone (closing from another thread)
            with contextlib.suppress(Exception):
                trans.rollback()
            self._unlock(file_locked)
            for job in batch:
                self._queue.put(job)
            raise
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            # This drain is cancelled, not the commit: its callers still get their answers.
            commit.add_done_callback(lambda f: self._committed(f, batch, outcomes))
            raise
        except Exception:
            pass
        self._committed(commit, batch, outcomes)

    def _committed(
        self,
        commit: asyncio.Future[None],
        batch: list[_Job[Any]],
        outcomes: list[tuple[_Job[Any], Any, Hooks, BaseException | None]],
    ) -> None:
        """On the loop, once the commit thread is done: settle the batch's jobs, or (the
        COMMIT failed, and was rolled back) hand them to the writer thread to run again."""
        if commit.cancelled() or commit.exception() is not None:
            log.warning(
                "commit of %d jobs failed (%s); the writer thread runs them again",
                len(batch),
                "cancelled" if commit.cancelled() else commit.exception(),
            )
            for job in batch:
                self._queue.put(job)
            return
        self.batches += 1
        self.jobs += len(batch)
        settle: list[_Settle] = []
        for job, result, hooks, error in outcomes:
            assert job.aio is not None
            settle.append((job.aio, result, error, hooks))
        _settle(settle)

    def _commit(self, trans: Any, file_locked: bool) -> None:
        """In the commit thread: the fsync, then the connection is free again."""
        try:
            trans.commit()
        except BaseException:
            if trans.is_active:
                with contextlib.suppress(Exception):
                    trans.rollback()
            raise
        finally:
            self._unlock(file_locked)
        if self._checkpointer is not None:
            self._checkpointer.poke()

    def _unlock(self, file_locked: bool) -> None:
        if file_locked and self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._conn_lock.release()

    # -- the thread ------------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect()
            if self._checkpointer is not None:
                # The checkpointer thread copies the WAL back (see Checkpointer).
                dbapi: Any = self._conn.connection.dbapi_connection
                dbapi.execute("PRAGMA wal_autocheckpoint=0")
            if self._pg:
                raw: Any = self._conn.connection.dbapi_connection
                self._backend_pid = int(raw.info.backend_pid)
        return self._conn

    def _run(self) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    break
                batch = [job]
                while len(batch) < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)
                        break
                    batch.append(nxt)
                self._run_batch(batch)
        finally:
            if self._conn is not None:
                self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            # Fail anything still queued.
            while True:
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    self._fail([left], WriterStopped("the database writer stopped"))

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        try:
            outcomes = self._attempt_reconnecting(batch)
        except Exception as exc:
            if not (isinstance(exc, DBAPIError) or _fatal(exc)):
                self._fail(batch, exc)
                return
            # A transaction-level failure (deadlock with another replica, serialization,
            # a dropped connection): the whole batch was rolled back. Run each job in its
            # own transaction, again a few times when it lost a deadlock.
            if len(batch) > 1:
                log.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
            for job in batch:
                self._run_alone(job, first_error=exc if len(batch) == 1 else None)
            return
        except BaseException as exc:  # pragma: no cover - defensive
            self._fail(batch, exc)
            raise
        self._deliver(outcomes)

    def _attempt_reconnecting(
        self, batch: list[_Job[Any]]
    ) -> list[tuple[_Job[Any], Any, Hooks, BaseException | None]]:
        """``_attempt``, and once more on a new connection when PostgreSQL dropped the old
        one (a restart, a failover, an idle timeout) before the COMMIT went out: nothing of
        the batch can have been committed then. A connection lost during the COMMIT leaves
        that unknown: the callers get the error, and their idempotency keys make their
        retry safe."""
        try:
            return self._attempt(batch)
        except Exception as exc:
            if self._in_commit or not self._pg or not connection_lost(self._conn, exc):
                raise
            log.warning("lost the database connection (%s); running the batch again", exc)
            self._drop_connection()
            return self._attempt(batch)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            self._conn = None

    def _run_alone(self, job: _Job[Any], first_error: BaseException | None) -> None:
        error = first_error
        for attempt in range(5):
            if error is not None and not _retryable(error):
                break
            if error is not None:
                time.sleep(0.005 * (attempt + 1) * (1 + random.random()))
            try:
                self._deliver(self._attempt([job]))
                return
            except Exception as exc:
                error = exc
        assert error is not None
        self._fail([job], error)

    def _attempt(
        self, batch: list[_Job[Any]]
    ) -> list[tuple[_Job[Any], Any, Hooks, BaseException | None]]:
        with self._conn_lock:
            if self._lock_fd is None:
                return self._attempt_locked(batch)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                return self._attempt_locked(batch)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _attempt_locked(
        self, batch: list[_Job[Any]]
    ) -> list[tuple[_Job[Any], Any, Hooks, BaseException | None]]:
        self._in_commit = False
        conn = self._connection()
        for attempt in range(5):
            try:
                trans = conn.begin()
                break
            except OperationalError:
                # SQLite busy beyond busy_timeout, or a dropped PostgreSQL connection.
                conn.invalidate()
                self._conn = None
                conn = self._connection()
                time.sleep(0.05 * (attempt + 1))
        else:
            trans = conn.begin()
        try:
            outcomes = self._run_jobs(conn, batch)
            self._in_commit = True
            trans.commit()
        except BaseException:
            if trans.is_active:
                with contextlib.suppress(Exception):  # not on a connection that is gone
                    trans.rollback()
            raise
        if self._checkpointer is not None:
            self._checkpointer.poke()
        self.batches += 1
        self.jobs += len(batch)
        return outcomes

    def _run_jobs(
        self, conn: Connection, batch: list[_Job[Any]]
    ) -> list[tuple[_Job[Any], Any, Hooks, BaseException | None]]:
        """Each job in its own savepoint, inside the caller's open transaction."""
        outcomes: list[tuple[_Job[Any], Any, Hooks, BaseException | None]] = []
        # Savepoints straight on the DBAPI cursor: the same SQL SQLAlchemy would send,
        # without its bookkeeping on every job.
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if self._pg:
                return self._run_jobs_pg(cur, conn, batch)
            for job in batch:
                hooks: Hooks = []
                cur.execute("SAVEPOINT job")
                try:
                    result = job.fn(conn, hooks)
                except Exception as exc:
                    if _fatal(exc):
                        raise
                    cur.execute("ROLLBACK TO SAVEPOINT job")
                    cur.execute("RELEASE SAVEPOINT job")
                    outcomes.append((job, None, [], exc))
                else:
                    cur.execute("RELEASE SAVEPOINT job")
                    outcomes.append((job, result, hooks, None))
        finally:
            cur.close()
        return outcomes

    @staticmethod
    def _run_jobs_pg(
        cur: Any, conn: Connection, batch: list[_Job[Any]]
    ) -> list[tuple[_Job[Any], Any, Hooks, BaseException | None]]:
        """The same on PostgreSQL, where every statement is a round trip: the savepoint
        commands travel together (one simple-protocol query each time), and the last job's
        savepoint is released by the COMMIT."""
        outcomes: list[tuple[_Job[Any], Any, Hooks, BaseException | None]] = []
        # Replicas take turns, a batch at a time, as the processes on one SQLite file do:
        # batches hold the hot rows (a merchant's event counter and balance) until commit,
        # and two interleaving would deadlock.
        before = "SELECT pg_advisory_xact_lock(8150815)"
        for job in batch:
            hooks: Hooks = []
            cur.execute(f"{before}; SAVEPOINT job" if before else "SAVEPOINT job", prepare=False)
            try:
                result = job.fn(conn, hooks)
            except Exception as exc:
                if _fatal(exc):
                    raise
                # Now, not with the next job's savepoint: a COMMIT right after a failed
                # statement would roll the whole batch back.
                cur.execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job", prepare=False)
                before = ""
                outcomes.append((job, None, [], exc))
            else:
                before = "RELEASE SAVEPOINT job"
                outcomes.append((job, result, hooks, None))
        return outcomes

    @staticmethod
    def _deliver(outcomes: list[tuple[_Job[Any], Any, Hooks, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settle]] = {}
        for job, result, hooks, exc in outcomes:
            if job.aio is not None:
                # The hooks (telling the event streams) run on the job's loop, in commit
                # order, with the same single wake-up that settles the batch's futures.
                by_loop.setdefault(job.aio.get_loop(), []).append((job.aio, result, exc, hooks))
                continue
            if exc is None:
                _run_hooks(hooks)
            assert job.future is not None
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
        for loop, items in by_loop.items():
            # A closed loop means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)

    @staticmethod
    def _fail(batch: list[_Job[Any]], exc: BaseException) -> None:
        GroupCommitWriter._deliver([(job, None, [], exc) for job in batch])


_Settle = tuple[asyncio.Future[Any], Any, BaseException | None, Hooks]


def _run_hooks(hooks: Hooks) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # pragma: no cover - a subscriber's problem
            log.exception("after-commit hook failed")


def _settle(items: list[_Settle]) -> None:
    for fut, result, exc, hooks in items:
        if exc is None:
            _run_hooks(hooks)
        if fut.done():  # the caller gave up (cancelled)
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


def _fatal(exc: BaseException) -> bool:
    """A broken connection or database, or a lost deadlock (as opposed to an error a
    savepoint undoes, like a constraint violation or a domain error): the whole batch
    must go."""
    if _retryable(exc):
        return True
    if isinstance(exc, DBAPIError):
        return isinstance(exc, OperationalError)
    return type(exc).__name__ in ("OperationalError", "InterfaceError", "InternalError")


def connection_lost(conn: Connection | None, exc: BaseException) -> bool:
    """Whether ``exc`` came from a connection that is gone (the server restarted, failed
    over or timed it out). The store's hot path runs on the DBAPI cursor, past SQLAlchemy's
    own disconnect detection: psycopg says so on the connection."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if conn is None or conn.invalidated or conn.closed:
        return True
    raw = conn.connection.dbapi_connection
    return bool(getattr(raw, "broken", False) or getattr(raw, "closed", False))


def database_unavailable(exc: BaseException) -> bool:
    """The database is down, restarting or too busy, not a bug: PostgreSQL's connection
    errors (psycopg's OperationalError: a lost connection, a refused one, a shutdown), a
    connection SQLAlchemy found dropped, SQLite's write lock held past its timeout."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, sqlite3.OperationalError):
        return "database is locked" in str(exc)
    return type(exc).__module__.startswith("psycopg") and any(
        c.__name__ == "OperationalError" for c in type(exc).__mro__
    )


def _retryable(exc: BaseException) -> bool:
    """PostgreSQL chose this transaction as a deadlock victim or could not serialize it:
    running it again is safe and will usually succeed."""
    code = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in ("40P01", "40001")
