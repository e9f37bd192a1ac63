"""Composition root: settings -> database -> services -> gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from functools import partial

from psp_server.adapters import migrate
from psp_server.adapters.store import SqlStore
from psp_server.config import Settings
from psp_server.service.admin import AdminServices
from psp_server.service.cards import CardServices
from psp_server.service.clock import Clock, SystemClock
from psp_server.service.common import Deps
from psp_server.service.events import EventBus, Notice
from psp_server.service.merchant import MerchantServices
from psp_server.service.runtime import Database
from psp_server.service.wallet import WalletServices

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    deps: Deps
    merchants: MerchantServices
    wallets: WalletServices
    admin: AdminServices
    cards: CardServices | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _listener: threading.Thread | None = None
    _stop_listener: threading.Event = field(default_factory=threading.Event)

    @property
    def db(self) -> Database:
        return self.deps.db

    @property
    def bus(self) -> EventBus:
        return self.deps.bus

    def close(self) -> None:
        self._stop_listener.set()
        if self._listener is not None:
            self._listener.join(timeout=3)
        self.deps.db.close()


def build_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    migrate_schema: bool = True,
    primary: bool = True,
) -> App:
    settings.resolve()
    if migrate_schema:
        migrate.upgrade(settings.db_url)
    db = Database(settings.db_url, max_batch=settings.max_batch, commit_delay=settings.commit_delay)
    deps = Deps(db=db, clock=clock or SystemClock(), settings=settings, bus=EventBus())
    merchants = MerchantServices(deps)
    wallets = WalletServices(deps, merchants)
    admin = AdminServices(deps, merchants, wallets)
    cards = build_cards(deps, merchants, recover=primary) if settings.cardnet else None
    return App(settings, deps, merchants, wallets, admin, cards)


def build_cards(deps: Deps, merchants: MerchantServices, *, recover: bool = True) -> CardServices:
    """``recover``: reverse swipes a stop left unanswered; only the primary process does
    it (a worker starting later must not touch requests another process has in flight)."""
    """The card rail: the network client (its reversal queue in the database), the PAN
    vault (key from configuration or its key file, never the database)."""
    from psp_server.adapters.card_store import SqlReversalQueue
    from psp_server.adapters.cardnet_client import CardNetworkClient
    from psp_server.adapters.pan_vault import PanVault
    from psp_server.cli.cardnet import parse_listen

    s = deps.settings
    host, port = parse_listen(s.cardnet)
    if s.pan_key:
        vault = PanVault.from_text(s.pan_key)
    else:
        assert s.pan_key_file is not None
        vault = PanVault.from_key_file(s.pan_key_file)
    queue = SqlReversalQueue(deps.db)
    client = CardNetworkClient(
        host,
        port,
        timeout=s.cardnet_timeout,
        acquirer_id=s.acquirer_id,
        failure_threshold=s.cardnet_failure_threshold,
        reset_timeout=s.cardnet_reset_timeout,
        reversal_queue=queue,
    )
    cards = CardServices(deps, merchants, client, vault, s.settlement_dir, queue)
    if recover and (n := cards.recover_sync()):
        log.warning("%d card request(s) left unanswered by a stop; reversing them", n)
    queue.load()
    return cards


async def retry_reversals(app: App) -> None:
    """At start, finish card requests an earlier run left unbooked; then reverse on
    recovery: deliver queued reversals once the network answers again."""
    assert app.cards is not None
    try:  # first, finish what an earlier run sent but did not book
        if n := await app.cards.recover():
            log.warning("%d card request(s) left unbooked by a stop were finished", n)
    except Exception:  # a client retry or the next start finishes them
        log.exception("card recovery failed")
    while True:
        try:
            await app.cards.retry_reversals()
        except Exception:  # keep trying; the next round retries
            log.exception("reversal retry failed")
        await asyncio.sleep(app.settings.reversal_interval)


async def sweep_expired(app: App) -> None:
    """Record EXPIRED for pending QRs past their expiry, so terminals are told."""
    while True:
        try:
            await app.merchants.expire_due()
        except Exception:  # keep sweeping; the next round retries
            log.exception("expiry sweep failed")
        await asyncio.sleep(app.settings.sweep_interval)


def start_pg_listener(app: App) -> None:
    """Across replicas: PostgreSQL NOTIFY tells this process of events committed by
    others; the streams then read them from the log."""
    if not app.db.is_postgres:
        return
    import psycopg

    from psp_server.adapters.db import normalize_url

    url = normalize_url(app.settings.db_url).replace("postgresql+psycopg://", "postgresql://")

    def run() -> None:
        while not app._stop_listener.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("LISTEN scanpay_events")
                    while not app._stop_listener.is_set():
                        for n in conn.notifies(timeout=0.5):
                            if n.pid == app.db.writer.backend_pid():
                                # This process's own event: its streams had it at commit.
                                continue
                            merchant_id, _, seq = n.payload.partition(":")
                            if seq.isdigit():
                                app.bus.publish(Notice(merchant_id, int(seq)))
            except Exception:
                log.warning("event listener lost its connection; reconnecting", exc_info=True)
                app._stop_listener.wait(1.0)

    app._listener = threading.Thread(target=run, name="pg-listen", daemon=True)
    app._listener.start()


async def follow_sqlite_log(app: App, interval: float = 0.005) -> None:
    """Across server processes on one SQLite file (``--workers N``): watch the event log
    for rows committed by the other processes and tell this process's streams, which then
    read them from the log (the role LISTEN/NOTIFY plays on PostgreSQL). A notice for an
    event this process already streamed is dropped by the stream's cursor."""
    last = await app.db.read(lambda s: s.event_log_head())
    while True:
        try:
            rows = await app.db.read(partial(SqlStore.event_log_after, rowid=last))
            for rowid, merchant_id, seq in rows:
                app.bus.publish(Notice(merchant_id, seq))
                last = rowid
        except Exception:  # keep following; the next round retries
            log.exception("event log follower failed")
        await asyncio.sleep(interval)


async def start_background(app: App, *, primary: bool = True, follow_log: bool = False) -> None:
    """``primary``: this process runs the sweeper and the card reversal retries (one per
    deployment on SQLite). ``follow_log``: other processes write to the same SQLite file."""
    if primary:
        app._tasks.append(asyncio.create_task(sweep_expired(app)))
        if app.cards is not None:
            app._tasks.append(asyncio.create_task(retry_reversals(app)))
    if follow_log and not app.db.is_postgres:
        app._tasks.append(asyncio.create_task(follow_sqlite_log(app)))
    start_pg_listener(app)


async def stop_background(app: App) -> None:
    for t in app._tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    app._tasks.clear()
    if app.cards is not None:
        await app.cards.flush()
        await app.cards.client.close()
