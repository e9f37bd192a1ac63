"""Schema migrations with Alembic, driven from code (``scanpay psp migrate``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

from psp_server.adapters.db import make_engine, normalize_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        # WAL must be set outside a transaction, once, before anyone writes.
        engine = make_engine(url, writer=False)
        with engine.connect():
            pass
        engine.dispose()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # One migrator at a time when several replicas start together.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(815)")
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    engine.dispose()


def check() -> None:
    """Fail when the tables in code and the migrations disagree (``alembic check``)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'check.db'}"
        upgrade(url)
        command.check(alembic_config(url))


def revision(message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'rev.db'}"
        upgrade(url)
        command.revision(alembic_config(url), message=message, autogenerate=True)
