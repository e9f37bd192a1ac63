"""SQL for the card rail's tables, on the unit of work's connection (``SqlStore.conn``).

Nothing here ever sees a clear PAN or track data: rows hold the vault's ciphertext, a keyed
fingerprint and the masked number only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update

from psp_server.adapters import tables as t
from psp_server.adapters.cardnet_client import OriginalRef, PendingReversal, Trace
from psp_server.adapters.store import SqlStore
from psp_server.domain.money import Money

T = TypeVar("T")

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
    crash is still delivered after the restart. Writes go through the group-commit writer
    synchronously (the client's protocol is synchronous; these are rare)."""

    def __init__(
        self,
        write: Callable[[Callable[[SqlStore], Any]], Any],
        read: Callable[[Callable[[SqlStore], Any]], Any],
    ) -> None:
        self._write = write
        self._read = read

    def add(self, item: PendingReversal) -> None:
        self._write(lambda s: CardStore(s).add_reversal(item))

    def remove(self, item: PendingReversal) -> None:
        key = item.key
        self._write(lambda s: CardStore(s).remove_reversal(key))

    def items(self) -> list[PendingReversal]:
        out: list[PendingReversal] = self._read(lambda s: CardStore(s).reversals())
        return out
