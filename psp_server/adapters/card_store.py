"""SQL for the card rail's tables, on the unit of work's connection (``SqlStore.conn``).

Nothing here ever sees a clear PAN or track data: rows hold the vault's ciphertext, a keyed
fingerprint and the masked number only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, insert, select, update

from psp_server.adapters import tables as t
from psp_server.adapters.cardnet_client import OriginalRef, PendingReversal, Trace
from psp_server.adapters.store import SqlStore
from psp_server.domain.money import Money

if TYPE_CHECKING:
    from psp_server.service.runtime import Database

T = TypeVar("T")
log = logging.getLogger(__name__)

Row = dict[str, Any]


class CardStore:
    def __init__(self, store: SqlStore) -> None:
        self.s = store
        self.conn = store.conn

    # -- card payments -------------------------------------------------------------------

    def insert_card(self, values: Row) -> None:
        self.conn.execute(insert(t.card_payments).values(**values))

    def get_card(self, payment_id: str) -> Row | None:
        c = t.card_payments.c
        row = self.conn.execute(select(t.card_payments).where(c.payment_id == payment_id)).first()
        return None if row is None else dict(row._mapping)

    def card_by_idem(self, scope: str, key: str) -> Row | None:
        c = t.card_payments.c
        row = self.conn.execute(
            select(t.card_payments).where(c.idem_scope == scope, c.idem_key == key)
        ).first()
        return None if row is None else dict(row._mapping)

    def card_by_ntid(self, ntid: str) -> Row | None:
        c = t.card_payments.c
        row = self.conn.execute(
            select(t.card_payments).where(c.network_transaction_id == ntid)
        ).first()
        return None if row is None else dict(row._mapping)

    def update_card(self, payment_id: str, **values: Any) -> None:
        c = t.card_payments.c
        self.conn.execute(
            update(t.card_payments).where(c.payment_id == payment_id).values(**values)
        )

    def delete_card(self, payment_id: str) -> None:
        c = t.card_payments.c
        self.conn.execute(delete(t.card_payments).where(c.payment_id == payment_id))

    def cards_in_state(self, state: str) -> list[Row]:
        c = t.card_payments.c
        rows = self.conn.execute(select(t.card_payments).where(c.state == state)).all()
        return [dict(r._mapping) for r in rows]

    def unbatched_captures(self, merchant_id: str) -> list[Row]:
        c = t.card_payments.c
        rows = self.conn.execute(
            select(t.card_payments).where(
                c.merchant_id == merchant_id, c.state == "captured", c.batch_id.is_(None)
            )
        ).all()
        return [dict(r._mapping) for r in rows]

    def pending_captures(self) -> list[Row]:
        """Authorizations whose capture advice was recorded (job 1) but not booked."""
        c = t.card_payments.c
        rows = self.conn.execute(
            select(t.card_payments)
            .where(c.state == "authorized", c.capture_stan.is_not(None))
            .order_by(c.updated_at)
        ).all()
        return [dict(r._mapping) for r in rows]

    def tag_for_batch(self, merchant_id: str, close_id: str) -> None:
        """Claim the merchant's captured, unbatched payments and approved refunds for the
        batch close ``close_id`` (job 1 of a close; they leave the open batch)."""
        c = t.card_payments.c
        self.conn.execute(
            update(t.card_payments)
            .where(c.merchant_id == merchant_id, c.state == "captured", c.batch_id.is_(None))
            .values(batch_id=close_id)
        )
        r = t.card_refunds.c
        self.conn.execute(
            update(t.card_refunds)
            .where(r.merchant_id == merchant_id, r.state == "approved", r.batch_id.is_(None))
            .values(batch_id=close_id)
        )

    def untag_batch(self, close_id: str) -> None:
        """A close the network did not perform: its payments and refunds are open again."""
        c = t.card_payments.c
        self.conn.execute(
            update(t.card_payments).where(c.batch_id == close_id).values(batch_id=None)
        )
        r = t.card_refunds.c
        self.conn.execute(
            update(t.card_refunds).where(r.batch_id == close_id).values(batch_id=None)
        )

    def cards_in_batch(self, batch_id: str) -> list[Row]:
        c = t.card_payments.c
        rows = self.conn.execute(select(t.card_payments).where(c.batch_id == batch_id)).all()
        return [dict(r._mapping) for r in rows]

    # -- refunds ---------------------------------------------------------------------------

    def insert_refund(self, values: Row) -> None:
        self.conn.execute(insert(t.card_refunds).values(**values))

    def update_refund(self, refund_id: str, **values: Any) -> None:
        c = t.card_refunds.c
        self.conn.execute(update(t.card_refunds).where(c.refund_id == refund_id).values(**values))

    def delete_refund(self, refund_id: str) -> None:
        c = t.card_refunds.c
        self.conn.execute(delete(t.card_refunds).where(c.refund_id == refund_id))

    def get_refund(self, refund_id: str, *, for_update: bool = False) -> Row | None:
        c = t.card_refunds.c
        q = select(t.card_refunds).where(c.refund_id == refund_id)
        if for_update and self.s.is_postgres:
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return None if row is None else dict(row._mapping)

    def refund_by_idem(self, scope: str, key: str) -> Row | None:
        c = t.card_refunds.c
        row = self.conn.execute(
            select(t.card_refunds).where(c.idem_scope == scope, c.idem_key == key)
        ).first()
        return None if row is None else dict(row._mapping)

    def refunds_in_state(self, state: str) -> list[Row]:
        c = t.card_refunds.c
        rows = self.conn.execute(
            select(t.card_refunds).where(c.state == state).order_by(c.created_at)
        ).all()
        return [dict(r._mapping) for r in rows]

    def refund_by_ntid(self, ntid: str) -> Row | None:
        c = t.card_refunds.c
        row = self.conn.execute(
            select(t.card_refunds).where(c.network_transaction_id == ntid)
        ).first()
        return None if row is None else dict(row._mapping)

    def unbatched_refunds(self, merchant_id: str) -> list[Row]:
        c = t.card_refunds.c
        rows = self.conn.execute(
            select(t.card_refunds).where(
                c.merchant_id == merchant_id, c.state == "approved", c.batch_id.is_(None)
            )
        ).all()
        return [dict(r._mapping) for r in rows]

    def refunds_in_batch(self, batch_id: str) -> list[Row]:
        c = t.card_refunds.c
        rows = self.conn.execute(select(t.card_refunds).where(c.batch_id == batch_id)).all()
        return [dict(r._mapping) for r in rows]

    # -- batches and settlement ---------------------------------------------------------

    def insert_batch(self, values: Row) -> None:
        self.conn.execute(insert(t.card_batches).values(**values))

    def get_batch(self, batch_id: str) -> Row | None:
        c = t.card_batches.c
        row = self.conn.execute(select(t.card_batches).where(c.id == batch_id)).first()
        return None if row is None else dict(row._mapping)

    def batches_settling_on(self, day: str) -> list[Row]:
        c = t.card_batches.c
        rows = self.conn.execute(select(t.card_batches).where(c.settlement_date == day)).all()
        return [dict(r._mapping) for r in rows]

    # -- batch closes in flight ------------------------------------------------------------

    def insert_close(self, values: Row) -> None:
        self.conn.execute(insert(t.card_batch_closes).values(**values))

    def get_close(self, close_id: str, *, for_update: bool = False) -> Row | None:
        c = t.card_batch_closes.c
        q = select(t.card_batch_closes).where(c.id == close_id)
        if for_update and self.s.is_postgres:
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return None if row is None else dict(row._mapping)

    def close_by_idem(self, scope: str, key: str) -> Row | None:
        c = t.card_batch_closes.c
        row = self.conn.execute(
            select(t.card_batch_closes).where(c.idem_scope == scope, c.idem_key == key)
        ).first()
        return None if row is None else dict(row._mapping)

    def closes_in_state(self, state: str, merchant_id: str | None = None) -> list[Row]:
        c = t.card_batch_closes.c
        q = select(t.card_batch_closes).where(c.state == state).order_by(c.created_at)
        if merchant_id is not None:
            q = q.where(c.merchant_id == merchant_id)
        return [dict(r._mapping) for r in self.conn.execute(q).all()]

    def update_close(self, close_id: str, **values: Any) -> None:
        c = t.card_batch_closes.c
        self.conn.execute(update(t.card_batch_closes).where(c.id == close_id).values(**values))

    def delete_close(self, close_id: str) -> None:
        c = t.card_batch_closes.c
        self.conn.execute(delete(t.card_batch_closes).where(c.id == close_id))

    def insert_settlement(self, values: Row) -> None:
        self.conn.execute(insert(t.card_settlements).values(**values))

    def settlements_for(self, batch_id: str) -> list[Row]:
        c = t.card_settlements.c
        rows = self.conn.execute(
            select(t.card_settlements).where(c.batch_id == batch_id).order_by(c.id)
        ).all()
        return [dict(r._mapping) for r in rows]

    # -- disputes ----------------------------------------------------------------------

    def insert_dispute(self, values: Row) -> None:
        self.conn.execute(insert(t.card_disputes).values(**values))

    def get_dispute(self, dispute_id: str) -> Row | None:
        c = t.card_disputes.c
        row = self.conn.execute(select(t.card_disputes).where(c.id == dispute_id)).first()
        return None if row is None else dict(row._mapping)

    def dispute_by_ntid(self, ntid: str) -> Row | None:
        c = t.card_disputes.c
        row = self.conn.execute(
            select(t.card_disputes).where(c.network_transaction_id == ntid)
        ).first()
        return None if row is None else dict(row._mapping)

    def list_disputes(self, merchant_id: str | None = None) -> list[Row]:
        c = t.card_disputes.c
        q = select(t.card_disputes).order_by(c.created_at)
        if merchant_id:
            q = q.where(c.merchant_id == merchant_id)
        return [dict(r._mapping) for r in self.conn.execute(q).all()]

    def update_dispute(self, dispute_id: str, **values: Any) -> None:
        c = t.card_disputes.c
        self.conn.execute(update(t.card_disputes).where(c.id == dispute_id).values(**values))

    # -- pending reversals ----------------------------------------------------------------

    def add_reversal(self, item: PendingReversal) -> None:
        ref = item.original
        c = t.card_reversals.c
        if self.conn.execute(select(c.key).where(c.key == item.key)).first() is not None:
            return
        self.conn.execute(
            insert(t.card_reversals).values(
                key=item.key,
                mti=ref.mti,
                processing_code=ref.processing_code,
                stan=ref.trace.stan,
                transmitted_at=ref.trace.transmitted_at,
                merchant_id=ref.merchant_id,
                terminal_id=ref.terminal_id,
                amount_minor=ref.amount.amount_minor,
                currency=ref.amount.currency,
                reversal_stan=item.trace.stan,
                reversal_transmitted_at=item.trace.transmitted_at,
                created_at=item.created_at,
            )
        )

    def remove_reversal(self, key: str) -> None:
        c = t.card_reversals.c
        self.conn.execute(delete(t.card_reversals).where(c.key == key))

    def reversals(self) -> list[PendingReversal]:
        c = t.card_reversals.c
        rows = self.conn.execute(select(t.card_reversals).order_by(c.created_at)).all()
        return [
            PendingReversal(
                OriginalRef(
                    r.mti,
                    Trace(r.stan, r.transmitted_at),
                    r.merchant_id,
                    r.terminal_id,
                    Money(r.amount_minor, r.currency),
                    r.processing_code,
                ),
                Trace(r.reversal_stan, r.reversal_transmitted_at),
                r.created_at,
            )
            for r in rows
        ]


class SqlReversalQueue:
    """The client's ReversalQueue in the PSP's database, so a reversal queued before a
    crash is still delivered after the restart.

    The client's protocol is synchronous and called from the event loop, which must never
    block on the database: ``add``/``remove`` update an in-memory view at once and hand the
    write to the async ``Database.write`` in a task. ``flush`` waits for those writes: a
    caller that is about to drop the record a queued reversal replaces (the intent row of
    a lost swipe or refund) awaits it first, so a crash in between never loses both.
    ``items`` is the in-memory view; ``load`` (start-up) and ``refresh`` (async
    ``Database.read``, picks up what another process queued) fill it from the table.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._items: dict[str, PendingReversal] = {}
        self._writes: set[asyncio.Future[None]] = set()
        # Local changes made while a refresh reads the table: applied over what it read.
        self._since: dict[str, PendingReversal | None] | None = None

    def load(self) -> None:
        """At start-up, before the event loop serves anything."""
        rows: list[PendingReversal] = self._db.read_sync(lambda s: CardStore(s).reversals())
        self._items = {r.key: r for r in rows}

    async def refresh(self) -> None:
        await self.flush()
        self._since = {}
        try:
            rows: list[PendingReversal] = await self._db.read(lambda s: CardStore(s).reversals())
            since = self._since
        finally:
            self._since = None
        items = {r.key: r for r in rows}
        for key, item in since.items():
            if item is None:
                items.pop(key, None)
            else:
                items[key] = item
        self._items = items

    async def flush(self) -> None:
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def _submit(self, job: Callable[[SqlStore], None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a command-line tool): write directly
            self._db.write_sync(job)
            return
        fut = loop.create_task(self._db.write(job))
        self._writes.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[None]) -> None:
        self._writes.discard(fut)
        if not fut.cancelled() and (exc := fut.exception()) is not None:
            log.error("could not persist a card reversal: %s", exc)

    def add(self, item: PendingReversal) -> None:
        self._items[item.key] = item
        if self._since is not None:
            self._since[item.key] = item
        self._submit(lambda s: CardStore(s).add_reversal(item))

    def remove(self, item: PendingReversal) -> None:
        key = item.key
        self._items.pop(key, None)
        if self._since is not None:
            self._since[key] = None
        self._submit(lambda s: CardStore(s).remove_reversal(key))

    def items(self) -> list[PendingReversal]:
        return sorted(self._items.values(), key=lambda r: r.created_at)
