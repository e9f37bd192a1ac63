"""The group-commit writer on a real SQLite file: jobs from the event loop run there in
batches with the COMMIT on a thread, jobs from threads on the writer thread, both on one
connection; a job's result is reported only once it is committed; a failing job rolls
back alone; a batch that fails as a whole is run again job by job; two writers (two
server processes) on one file take turns without blocking either event loop."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from psp_server.adapters.db import GroupCommitWriter, WriterStopped, make_engine

Hooks = list[Callable[[], None]]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, Engine]]:
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    engine = make_engine(f"sqlite:///{path}", writer=True)
    try:
        yield path, engine
    finally:
        engine.dispose()


def insert(key: str, value: int = 1) -> Callable[[Connection, Hooks], str]:
    def job(conn: Connection, hooks: Hooks) -> str:
        conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
            "INSERT INTO t (k, v) VALUES (?, ?)", (key, value)
        )
        return key

    return job


def committed(path: Path) -> dict[str, int]:
    """What another connection (another process) sees: only committed rows."""
    with sqlite3.connect(path) as c:
        return dict(c.execute("SELECT k, v FROM t").fetchall())


async def test_loop_jobs_batch_and_report_only_what_is_committed(
    db: tuple[Path, Engine],
) -> None:
    path, engine = db
    writer = GroupCommitWriter(engine)
    seen_on_result: list[bool] = []
    try:

        async def one(i: int) -> None:
            key = await writer.submit_async(insert(f"k{i}"))
            seen_on_result.append(key in committed(path))

        await asyncio.gather(*(one(i) for i in range(200)))
    finally:
        writer.close()
    assert all(seen_on_result) and len(seen_on_result) == 200
    assert len(committed(path)) == 200
    # Many jobs per commit (the first batch may be alone; the rest wait for its fsync).
    assert writer.jobs == 200 and writer.batches < 20


async def test_a_failing_job_rolls_back_alone(db: tuple[Path, Engine]) -> None:
    path, engine = db
    writer = GroupCommitWriter(engine)

    def half_then_fail(conn: Connection, hooks: Hooks) -> None:
        insert("partial")(conn, hooks)
        raise ValueError("domain says no")

    try:
        results = await asyncio.gather(
            writer.submit_async(insert("a")),
            writer.submit_async(half_then_fail),
            writer.submit_async(insert("a")),  # unique key: fails in its savepoint
            writer.submit_async(insert("b")),
            return_exceptions=True,
        )
    finally:
        writer.close()
    assert results[0] == "a" and results[3] == "b"
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], Exception) and "UNIQUE" in str(results[2])
    assert committed(path) == {"a": 1, "b": 1}


async def test_loop_jobs_and_their_hooks_run_on_the_loop_in_commit_order(
    db: tuple[Path, Engine],
) -> None:
    """On SQLite a job from the event loop runs on the loop (no hand-over to a thread
    per statement); one from a thread runs on the writer thread."""
    _, engine = db
    writer = GroupCommitWriter(engine)
    loop_thread = threading.get_ident()
    ran_on: list[int] = []
    calls: list[tuple[str, int]] = []

    def job(key: str) -> Callable[[Connection, Hooks], str]:
        def run(conn: Connection, hooks: Hooks) -> str:
            ran_on.append(threading.get_ident())
            hooks.append(lambda: calls.append((key, threading.get_ident())))
            return insert(key)(conn, hooks)

        return run

    try:
        await asyncio.gather(*(writer.submit_async(job(f"h{i}")) for i in range(30)))
        assert set(ran_on) == {loop_thread}
        ran_on.clear()
        await asyncio.to_thread(lambda: writer.submit(job("from-thread")).result(timeout=30))
        assert len(ran_on) == 1 and ran_on[0] != loop_thread
    finally:
        writer.close()
    assert [k for k, _ in calls][:30] == [f"h{i}" for i in range(30)]
    assert {t for _, t in calls[:30]} == {loop_thread}


async def test_a_batch_that_fails_as_a_whole_is_run_again_job_by_job(
    db: tuple[Path, Engine],
) -> None:
    """A job that breaks the transaction (an OperationalError is fatal to the batch)
    takes down its batch; the writer thread then runs each job alone, so only the
    broken one fails."""
    path, engine = db
    writer = GroupCommitWriter(engine)
    tries = {"n": 0}

    def broken(conn: Connection, hooks: Hooks) -> None:
        tries["n"] += 1
        raise OperationalError("UPDATE x", {}, sqlite3.OperationalError("disk I/O error"))

    try:
        results = await asyncio.gather(
            writer.submit_async(insert("x1")),
            writer.submit_async(broken),
            writer.submit_async(insert("x2")),
            return_exceptions=True,
        )
    finally:
        writer.close()
    assert results[0] == "x1" and results[2] == "x2"
    assert isinstance(results[1], OperationalError)
    assert tries["n"] >= 2  # in the batch, then alone
    assert committed(path) == {"x1": 1, "x2": 1}


async def test_jobs_from_threads_and_from_the_loop_share_the_connection(
    db: tuple[Path, Engine],
) -> None:
    path, engine = db
    writer = GroupCommitWriter(engine)

    def from_thread(n: int) -> None:
        for i in range(n):
            writer.submit(insert(f"t{i}")).result(timeout=30)

    try:
        thread = asyncio.to_thread(from_thread, 150)
        loop_jobs = asyncio.gather(*(writer.submit_async(insert(f"l{i}")) for i in range(150)))
        await asyncio.gather(thread, loop_jobs)
        # and once more, interleaved at a finer grain
        for i in range(30):
            await asyncio.gather(
                asyncio.to_thread(writer.submit(insert(f"u{i}")).result, 30),
                writer.submit_async(insert(f"m{i}")),
            )
    finally:
        writer.close()
    rows = committed(path)
    assert len(rows) == 360


async def test_jobs_from_two_event_loops_are_each_settled_on_their_own(
    db: tuple[Path, Engine],
) -> None:
    """A second loop in another thread (a test harness, a tool) writing at the same time:
    its jobs go through the writer thread and its futures resolve on its own loop."""
    path, engine = db
    writer = GroupCommitWriter(engine)
    loop_thread = threading.get_ident()
    other_results: list[str] = []

    async def other_loop() -> None:
        mine = threading.get_ident()
        assert mine != loop_thread

        async def one(i: int) -> None:
            other_results.append(await writer.submit_async(insert(f"o{i}")))
            assert threading.get_ident() == mine

        await asyncio.gather(*(one(i) for i in range(100)))

    try:
        await asyncio.gather(
            asyncio.to_thread(asyncio.run, other_loop()),
            *(writer.submit_async(insert(f"m{i}")) for i in range(100)),
        )
    finally:
        writer.close()
    assert sorted(other_results) == sorted(f"o{i}" for i in range(100))
    assert len(committed(path)) == 200


async def test_a_drain_cancelled_before_it_ran_loses_nothing(db: tuple[Path, Engine]) -> None:
    """Its jobs go to the writer thread and the loop is free to start another drain."""
    path, engine = db
    writer = GroupCommitWriter(engine)
    try:
        first = writer.submit_async(insert("c1"))
        assert writer._drainer is not None
        writer._drainer.cancel()
        assert await asyncio.wait_for(first, 10) == "c1"
        ran_on: list[int] = []

        def c2(conn: Connection, hooks: Hooks) -> str:
            ran_on.append(threading.get_ident())
            return insert("c2")(conn, hooks)

        assert await asyncio.wait_for(writer.submit_async(c2), 10) == "c2"
        assert ran_on == [threading.get_ident()]  # on the loop again
    finally:
        writer.close()
    assert committed(path) == {"c1": 1, "c2": 1}


def on_thread(key: str, ran_on: list[int]) -> Callable[[Connection, Hooks], str]:
    """An insert that notes which thread ran it."""

    def run(conn: Connection, hooks: Hooks) -> str:
        ran_on.append(threading.get_ident())
        return insert(key)(conn, hooks)

    return run


async def thread_holds_the_connection(
    writer: GroupCommitWriter, release: threading.Event
) -> Future[str]:
    """A job from a thread that has the connection until ``release`` is set (it then
    inserts "thread"); returns once it has it."""
    started = threading.Event()

    def slow(conn: Connection, hooks: Hooks) -> str:
        started.set()
        release.wait(10)
        return insert("thread")(conn, hooks)

    held = writer.submit(slow)
    assert await asyncio.to_thread(started.wait, 10)
    return held


async def test_a_job_submitted_as_the_drain_ends_runs_on_the_loop(
    db: tuple[Path, Engine],
) -> None:
    """A caller that submits its next job as soon as the last one is answered (a till's
    next sale) finds the drain ending: the job still runs on the loop. Before, it was
    queued behind a drain that had already finished and went to the writer thread, which
    then kept the connection busy and drew the next drains' jobs over too."""
    path, engine = db
    writer = GroupCommitWriter(engine)
    ran_on: list[int] = []
    try:
        for i in range(20):
            # awaited directly: the caller runs again before the drain's done-callbacks
            assert await writer.submit_async(on_thread(f"s{i}", ran_on)) == f"s{i}"
    finally:
        writer.close()
    assert ran_on == [threading.get_ident()] * 20
    assert len(committed(path)) == 20


async def test_loop_jobs_wait_for_the_writer_thread_and_stay_on_the_loop(
    db: tuple[Path, Engine],
) -> None:
    """While a job from a thread has the connection, the loop's jobs wait for it (the loop
    serving meanwhile) and then run on the loop, not on the writer thread."""
    path, engine = db
    writer = GroupCommitWriter(engine)
    ran_on: list[int] = []
    release = threading.Event()
    try:
        from_thread = await thread_holds_the_connection(writer, release)
        jobs = [writer.submit_async(on_thread(f"l{i}", ran_on)) for i in range(10)]
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 10 and not any(j.done() for j in jobs)
        release.set()
        assert await asyncio.wait_for(asyncio.gather(*jobs), 10) == [f"l{i}" for i in range(10)]
        assert await asyncio.wrap_future(from_thread) == "thread"
    finally:
        release.set()
        writer.close()
    assert ran_on == [threading.get_ident()] * 10
    assert len(committed(path)) == 11


async def test_a_drain_cancelled_while_waiting_for_the_writer_thread_lets_go(
    db: tuple[Path, Engine],
) -> None:
    """Cancelled while it waits for the connection, the drain hands its jobs to the
    writer thread, and the connection it gets later is given back: the next jobs run."""
    path, engine = db
    writer = GroupCommitWriter(engine)
    release = threading.Event()
    try:
        from_thread = await thread_holds_the_connection(writer, release)
        waiting = writer.submit_async(insert("w"))
        await asyncio.sleep(0.05)  # the drain is waiting for the connection
        assert writer._drainer is not None
        writer._drainer.cancel()
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.wait_for(waiting, 10) == "w"
        assert await asyncio.wrap_future(from_thread) == "thread"
        ran_on: list[int] = []
        assert await asyncio.wait_for(writer.submit_async(on_thread("after", ran_on)), 10)
        assert ran_on == [threading.get_ident()]
    finally:
        release.set()
        writer.close()
    assert committed(path) == {"thread": 1, "w": 1, "after": 1}


async def test_waiting_for_another_process_does_not_block_the_loop(
    db: tuple[Path, Engine],
) -> None:
    """Another server process on the same file holds the write turn: this one's jobs
    wait for it off the loop (the loop keeps serving), and commit once it lets go."""
    path, engine = db
    writer = GroupCommitWriter(engine)
    other = os.open(str(path) + ".writelock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        pay = asyncio.ensure_future(writer.submit_async(insert("queued")))
        ticks = 0
        start = time.monotonic()
        while time.monotonic() - start < 0.3:
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks >= 10, "the event loop stalled while the file lock was taken"
        assert not pay.done() and committed(path) == {}
        fcntl.flock(other, fcntl.LOCK_UN)
        assert await asyncio.wait_for(pay, 10) == "queued"
        assert committed(path) == {"queued": 1}
        # and the lock is ours no longer: the other process gets its turn
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        os.close(other)
        writer.close()


def slow_commits(writer: GroupCommitWriter, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every COMMIT waits 0.2 s first (a slow fsync); the event is set once one starts."""
    real_commit = writer._commit
    started = threading.Event()

    def slow_commit(trans: Any, file_locked: bool) -> None:
        started.set()
        time.sleep(0.2)
        real_commit(trans, file_locked)

    monkeypatch.setattr(writer, "_commit", slow_commit)
    return started


async def test_the_loop_runs_while_a_commit_waits_for_the_disk(
    db: tuple[Path, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, engine = db
    writer = GroupCommitWriter(engine)
    slow_commits(writer, monkeypatch)
    try:
        pay = asyncio.ensure_future(writer.submit_async(insert("slow")))
        ticks = 0
        while not pay.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert pay.result() == "slow"
        assert ticks >= 10
    finally:
        writer.close()


async def test_a_drain_cancelled_during_the_commit_still_answers(
    db: tuple[Path, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, engine = db
    writer = GroupCommitWriter(engine)
    real_commit = writer._commit
    in_commit = slow_commits(writer, monkeypatch)
    try:
        pay = asyncio.ensure_future(writer.submit_async(insert("during")))
        while not in_commit.is_set():
            await asyncio.sleep(0.005)
        assert writer._drainer is not None
        writer._drainer.cancel()
        assert await asyncio.wait_for(pay, 10) == "during"
        monkeypatch.setattr(writer, "_commit", real_commit)
        assert await asyncio.wait_for(writer.submit_async(insert("after")), 10) == "after"
    finally:
        writer.close()
    assert committed(path) == {"during": 1, "after": 1}


async def test_close_writes_what_was_submitted_and_refuses_more(
    db: tuple[Path, Engine],
) -> None:
    path, engine = db
    writer = GroupCommitWriter(engine)
    assert await writer.submit_async(insert("before")) == "before"
    late = writer.submit_async(insert("late"))  # queued, its batch not started yet
    writer.close()
    assert await asyncio.wait_for(late, 10) == "late"
    with pytest.raises(WriterStopped):
        writer.submit_async(insert("after"))
    assert committed(path) == {"before": 1, "late": 1}


@pytest.mark.postgres
async def test_on_postgresql_a_failing_job_rolls_back_alone_first_middle_or_last(
    postgres_url: str,
) -> None:
    """On PostgreSQL the savepoint commands travel together and the last job's savepoint
    is released by the COMMIT: a job that fails first, in the middle or last of a batch
    still rolls back alone, and the others commit; so do jobs that send nothing (``n``
    fails, ``e`` succeeds), wherever they are."""
    table = f"w_{uuid.uuid4().hex[:10]}"
    engine = make_engine(postgres_url, writer=True)
    with engine.begin() as c:
        c.exec_driver_sql(f"CREATE TABLE {table} (k TEXT PRIMARY KEY)")
    writer = GroupCommitWriter(engine)

    def put(key: str) -> Callable[[Connection, Hooks], str]:
        def job(conn: Connection, hooks: Hooks) -> str:
            conn.exec_driver_sql(f"INSERT INTO {table} (k) VALUES (%(k)s)", {"k": key})
            return key

        return job

    def put_then_fail(key: str) -> Callable[[Connection, Hooks], None]:
        def job(conn: Connection, hooks: Hooks) -> None:
            put(key)(conn, hooks)
            raise ValueError("domain says no")

        return job

    def fail_at_once(conn: Connection, hooks: Hooks) -> None:
        raise ValueError("refused before any SQL")

    def nothing(key: str) -> Callable[[Connection, Hooks], str]:
        return lambda conn, hooks: key

    def make(key: str) -> Callable[[Connection, Hooks], Any]:
        return {"x": put_then_fail, "n": lambda k: fail_at_once, "e": nothing}.get(key[0], put)(key)

    gate = threading.Event()

    def hold(conn: Connection, hooks: Hooks) -> None:
        gate.wait(10)  # the jobs below queue up meanwhile and make one batch

    try:
        for scenario in (
            ["x1", "a1", "b1"],
            ["a2", "x2", "b2"],
            ["a3", "b3", "x3"],
            ["n1", "a4", "e1", "x4", "n2", "b4"],
            ["a5", "n3"],
            ["e2"],
            ["n4", "x5"],
            ["e3", "a6", "n5", "e4"],
        ):
            gate.clear()
            batches = writer.batches
            held = writer.submit(hold)
            jobs = [writer.submit_async(make(k)) for k in scenario]
            gate.set()
            await asyncio.wrap_future(held)
            results = await asyncio.gather(*jobs, return_exceptions=True)
            # One batch (two if the writer took `hold` alone): a batch that failed as a
            # whole would be run again a job at a time and hide a wrong savepoint command.
            assert writer.batches - batches <= 2, scenario
            for k, r in zip(scenario, results, strict=True):
                assert isinstance(r, ValueError) if k[0] in "xn" else r == k
    finally:
        gate.set()
        writer.close()
    with engine.connect() as c:
        keys = {r[0] for r in c.exec_driver_sql(f"SELECT k FROM {table}")}
        c.exec_driver_sql(f"DROP TABLE {table}")
        c.commit()
    engine.dispose()
    assert keys == {"a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4", "a5", "a6"}


async def test_under_load_a_small_batch_waits_for_company(db: tuple[Path, Engine]) -> None:
    """With a commit delay, a batch that follows a busy one waits a moment for the jobs on
    their way, so that two jobs 10 ms apart share one commit."""
    path, engine = db
    writer = GroupCommitWriter(engine, commit_delay=0.2)
    try:
        # Under load: two jobs at once make a batch of two (the first batch never waits).
        await asyncio.gather(writer.submit_async(insert("x")), writer.submit_async(insert("y")))
        assert writer.batches == 1

        async def later() -> str:
            await asyncio.sleep(0.01)
            return await writer.submit_async(insert("b"))

        started = time.perf_counter()
        results = await asyncio.gather(writer.submit_async(insert("a")), later())
        waited = time.perf_counter() - started
    finally:
        writer.close()
    assert results == ["a", "b"]
    assert writer.batches == 2 and writer.jobs == 4  # "a" waited for "b"
    assert 0.2 <= waited < 2
    assert committed(path) == {"x": 1, "y": 1, "a": 1, "b": 1}


async def test_a_lone_job_never_waits_for_company(db: tuple[Path, Engine]) -> None:
    """One till paying now and then: each job is alone in its batch and is not held back
    by the commit delay."""
    _, engine = db
    writer = GroupCommitWriter(engine, commit_delay=1.0)
    try:
        for i in range(3):
            started = time.perf_counter()
            assert await writer.submit_async(insert(f"k{i}")) == f"k{i}"
            assert time.perf_counter() - started < 0.5
    finally:
        writer.close()
    assert writer.batches == 3 and writer.jobs == 3


async def test_closing_while_a_batch_waits_for_company_loses_nothing(
    db: tuple[Path, Engine],
) -> None:
    path, engine = db
    writer = GroupCommitWriter(engine, commit_delay=0.3)
    await asyncio.gather(writer.submit_async(insert("x")), writer.submit_async(insert("y")))
    waiting = writer.submit_async(insert("a"))
    await asyncio.sleep(0.05)  # the drain is in its delay now
    await asyncio.to_thread(writer.close)  # the writer thread runs "a" as it stops
    assert await asyncio.wait_for(waiting, 5) == "a"
    await asyncio.sleep(0.4)  # the drain wakes up to a closed writer and leaves
    assert committed(path) == {"x": 1, "y": 1, "a": 1}


def temp_files_open() -> list[str]:
    """SQLite's temp files (statement journals) this process has open: unlinked files
    named etilqs_*."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "etilqs_" in target:
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
async def test_a_big_batch_keeps_its_savepoint_journal_in_memory(
    db: tuple[Path, Engine],
) -> None:
    """Each job's savepoint copies the pages it changes to the statement journal; a batch
    changing hundreds of KiB of pages keeps that journal in memory, not in a temp file
    written page by page on the event loop."""
    path, engine = db
    with sqlite3.connect(path) as c:
        c.executemany(
            "INSERT INTO t (k, v) VALUES (?, 0)", [(f"{i:04d}" + "x" * 3000,) for i in range(600)]
        )
    seen: list[list[str]] = []

    def touch(first: int) -> Callable[[Connection, Hooks], None]:
        def job(conn: Connection, hooks: Hooks) -> None:
            raw: Any = conn.connection.dbapi_connection
            # Thirty rows of about a page each: 120 KiB copied to the journal, past the
            # 64 KiB that SQLite keeps in memory when temp_store is FILE.
            raw.execute(
                "UPDATE t SET v = v + 1 WHERE k >= ? AND k < ?",
                (f"{first:04d}", f"{first + 30:04d}"),
            )
            seen.append(temp_files_open())

        return job

    writer = GroupCommitWriter(engine)
    try:
        await asyncio.gather(*(writer.submit_async(touch(30 * n)) for n in range(20)))
    finally:
        writer.close()
    assert writer.batches == 1  # all twenty jobs in one transaction
    assert seen == [[]] * 20
    assert sum(committed(path).values()) == 600


async def test_the_wal_is_copied_back_by_the_checkpointer_not_by_a_commit(
    db: tuple[Path, Engine],
) -> None:
    """The writer's connection never checkpoints (a checkpoint inside a commit delays
    every payment of that batch); the checkpointer thread copies the WAL into the
    database file soon after the commits."""
    path, engine = db
    writer = GroupCommitWriter(engine)
    try:

        def insert(i: int) -> Callable[[Connection, Hooks], int]:
            def job(conn: Connection, hooks: Hooks) -> int:
                raw: Any = conn.connection.dbapi_connection
                raw.execute("INSERT INTO t (k, v) VALUES (?, ?)", (f"{i:05d}" + "y" * 2000, i))
                return int(raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

            return job

        settings = await asyncio.gather(*(writer.submit_async(insert(i)) for i in range(1500)))
        assert set(settings) == {0}  # off on the writer's connection
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # The database file alone, without the WAL: what the checkpoints put there.
            with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as c:
                in_file = c.execute("SELECT count(*) FROM t").fetchone()[0]
            if in_file == 1500:
                break
            await asyncio.sleep(0.05)
        assert in_file == 1500
    finally:
        writer.close()
