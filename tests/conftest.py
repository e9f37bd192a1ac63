"""Shared fixtures: a real PSP on loopback over SQLite, and over PostgreSQL where one is
reachable (in CI it must be: PSP_REQUIRE_POSTGRES=1 turns a skip into a failure)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cardnet import CardnetProcess
from tests.support.psp import LivePsp

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_admin_url() -> str:
    return os.environ.get("PSP_TEST_POSTGRES_URL", DEFAULT_PG)


def _pg_reachable(url: str) -> str | None:
    """None when reachable, else why not."""
    try:
        import psycopg

        with psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3
        ) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {url}: {exc.__class__.__name__}: {exc}".strip()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session, dropped afterwards."""
    admin = _pg_admin_url()
    why = _pg_reachable(admin)
    if why is not None:
        if os.environ.get("PSP_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (CI) but: {why}")
        pytest.skip(why)
    import psycopg

    name = f"scanpay_test_{uuid.uuid4().hex[:12]}"
    plain = admin.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        # Drop whatever engines still point at it, then the database.
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def live_psp(tmp_path: Path) -> Iterator[LivePsp]:
    """A real PSP server over SQLite in a temporary data directory."""
    psp = LivePsp(tmp_path / "psp").start()
    try:
        yield psp
    finally:
        psp.stop()


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        "sqlite-gateway",
        pytest.param("postgres-gateway", marks=pytest.mark.postgres),
    ],
)
def psp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePsp]:
    """One real server per test module and backend; tests make their own merchants and
    consumers, so they do not see each other's data. ``*-gateway``: the layout of
    ``psp serve --gateways``, every call through a gateway (which answers reads itself)
    to the core."""
    data = tmp_path_factory.mktemp(f"psp-{request.param}")
    url = request.getfixturevalue("postgres_url") if "postgres" in request.param else None
    server = LivePsp(data, url, gateway=request.param.endswith("-gateway")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cardnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CardnetProcess]:
    """The real card-network simulator process on a free port, for a test module."""
    sim = CardnetProcess(tmp_path_factory.mktemp("cardnet") / "data").start()
    try:
        yield sim
    finally:
        sim.close()
