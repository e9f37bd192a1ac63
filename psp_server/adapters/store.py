"""The SQL store: every query the services run, on one connection inside one
transaction (the unit of work). Implements ``service.ports.Store``."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from psp_server.adapters import tables as t
from psp_server.domain import ids
from psp_server.domain.errors import InsufficientFunds
from psp_server.domain.ledger import NON_NEGATIVE, AccountRef, JournalEntry, balance_deltas
from psp_server.domain.parties import Activity, Consumer, Event, Merchant, StaticQr, Terminal
from psp_server.domain.payments import (
    Payment,
    PaymentMethod,
    PaymentStatus,
    from_snapshot,
    snapshot,
)

# Account ids never change once created: cache them per process.
_ACCOUNT_IDS: dict[tuple[str, str, str, str], str] = {}


class StaleWrite(RuntimeError):
    """An optimistic-concurrency check failed: someone else changed the row."""


class SqlStore:
    def __init__(self, conn: Connection, hooks: list[Callable[[], None]] | None = None) -> None:
        self.conn = conn
        self.hooks = hooks if hooks is not None else []
        self._db_key = str(conn.engine.url)
        self.is_postgres = conn.dialect.name == "postgresql"

    def after_commit(self, hook: Callable[[], None]) -> None:
        self.hooks.append(hook)

    # -- merchants and terminals -------------------------------------------------------

    def insert_merchant(self, m: Merchant) -> None:
        self.conn.execute(
            insert(t.merchants).values(
                id=m.id,
                code=m.code,
                name=m.name,
                city=m.city,
                country=m.country,
                currency=m.currency,
                mcc=m.mcc,
                discount_rate_bps=m.discount_rate_bps,
                event_seq=0,
                created_at=m.created_at,
            )
        )

    def get_merchant(self, merchant_id: str) -> Merchant | None:
        row = self.conn.execute(
            select(t.merchants).where(t.merchants.c.id == merchant_id)
        ).one_or_none()
        return None if row is None else _merchant(row)

    def list_merchants(self) -> list[Merchant]:
        rows = self.conn.execute(select(t.merchants).order_by(t.merchants.c.id)).all()
        return [_merchant(r) for r in rows]

    def insert_terminal(self, term: Terminal) -> None:
        self.conn.execute(
            insert(t.terminals).values(
                id=term.id,
                merchant_id=term.merchant_id,
                label=term.label,
                key_prefix=term.key_prefix,
                key_hash=term.key_hash,
                created_at=term.created_at,
                revoked_at=term.revoked_at,
            )
        )

    def get_terminal_by_prefix(self, prefix: str) -> Terminal | None:
        row = self.conn.execute(
            select(t.terminals).where(t.terminals.c.key_prefix == prefix)
        ).one_or_none()
        if row is None:
            return None
        return Terminal(
            id=row.id,
            merchant_id=row.merchant_id,
            label=row.label,
            key_prefix=row.key_prefix,
            key_hash=row.key_hash,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    def get_terminal(self, terminal_id: str) -> Terminal | None:
        row = self.conn.execute(
            select(t.terminals).where(t.terminals.c.id == terminal_id)
        ).one_or_none()
        if row is None:
            return None
        return Terminal(
            row.id,
            row.merchant_id,
            row.label,
            row.key_prefix,
            row.key_hash,
            row.created_at,
            row.revoked_at,
        )

    def insert_static_qr(self, q: StaticQr, now: datetime) -> None:
        self.conn.execute(
            insert(t.static_qrs).values(
                token=q.token, merchant_id=q.merchant_id, terminal_id=q.terminal_id, created_at=now
            )
        )

    def get_static_qr(self, token: str) -> StaticQr | None:
        row = self.conn.execute(
            select(t.static_qrs).where(t.static_qrs.c.token == token)
        ).one_or_none()
        return None if row is None else StaticQr(row.token, row.merchant_id, row.terminal_id)

    def get_static_qr_for(self, merchant_id: str, terminal_id: str | None) -> StaticQr | None:
        c = t.static_qrs.c
        cond = c.terminal_id.is_(None) if terminal_id is None else c.terminal_id == terminal_id
        row = self.conn.execute(
            select(t.static_qrs).where(and_(c.merchant_id == merchant_id, cond))
        ).first()
        return None if row is None else StaticQr(row.token, row.merchant_id, row.terminal_id)

    # -- consumers ---------------------------------------------------------------------

    def insert_consumer(self, c: Consumer) -> None:
        self.conn.execute(
            insert(t.consumers).values(
                id=c.id,
                email=c.email,
                display_name=c.display_name,
                password_hash=c.password_hash,
                currency=c.currency,
                kyc_tier=c.kyc_tier,
                failed_logins=0,
                locked_until=None,
                created_at=c.created_at,
            )
        )

    def _consumer_where(self, cond: Any) -> Consumer | None:
        row = self.conn.execute(select(t.consumers).where(cond)).one_or_none()
        if row is None:
            return None
        return Consumer(
            id=row.id,
            email=row.email,
            display_name=row.display_name,
            password_hash=row.password_hash,
            currency=row.currency,
            kyc_tier=row.kyc_tier,
            failed_logins=row.failed_logins,
            locked_until=row.locked_until,
            created_at=row.created_at,
        )

    def get_consumer(self, consumer_id: str) -> Consumer | None:
        return self._consumer_where(t.consumers.c.id == consumer_id)

    def get_consumer_by_email(self, email: str) -> Consumer | None:
        return self._consumer_where(t.consumers.c.email == email)

    def set_login_state(
        self, consumer_id: str, failed_logins: int, locked_until: datetime | None
    ) -> None:
        self.conn.execute(
            update(t.consumers)
            .where(t.consumers.c.id == consumer_id)
            .values(failed_logins=failed_logins, locked_until=locked_until)
        )

    def set_consumer_tier(self, consumer_id: str, tier: int) -> None:
        self.conn.execute(
            update(t.consumers).where(t.consumers.c.id == consumer_id).values(kyc_tier=tier)
        )

    def insert_refresh_token(
        self, consumer_id: str, token_hash: str, expires_at: datetime, now: datetime
    ) -> None:
        self.conn.execute(
            insert(t.refresh_tokens).values(
                id=ids.new_id("rtk"),
                consumer_id=consumer_id,
                token_hash=token_hash,
                expires_at=expires_at,
                used_at=None,
                created_at=now,
            )
        )

    def use_refresh_token(self, token_hash: str, now: datetime) -> str | None:
        """Mark a refresh token used (rotation) and return its consumer, or None when it
        is unknown, expired or already used."""
        c = t.refresh_tokens.c
        row = self.conn.execute(
            select(c.consumer_id, c.expires_at, c.used_at).where(c.token_hash == token_hash)
        ).one_or_none()
        if row is None or row.used_at is not None or row.expires_at <= now:
            return None
        res = self.conn.execute(
            update(t.refresh_tokens)
            .where(and_(c.token_hash == token_hash, c.used_at.is_(None)))
            .values(used_at=now)
        )
        return str(row.consumer_id) if res.rowcount == 1 else None

    # -- ledger ------------------------------------------------------------------------

    def account_id(self, ref: AccountRef, now: datetime) -> str:
        key = (self._db_key, ref.type.value, ref.owner, ref.currency)
        cached = _ACCOUNT_IDS.get(key)
        if cached is not None:
            return cached
        c = t.accounts.c
        cond = and_(c.type == ref.type.value, c.owner_id == ref.owner, c.currency == ref.currency)
        row = self.conn.execute(select(c.id).where(cond)).one_or_none()
        if row is None:
            new = ids.new_id("acc")
            try:
                with self.conn.begin_nested():
                    self.conn.execute(
                        insert(t.accounts).values(
                            id=new,
                            type=ref.type.value,
                            owner_id=ref.owner,
                            currency=ref.currency,
                            balance_minor=0,
                            created_at=now,
                        )
                    )
                acc_id = new
            except IntegrityError:
                acc_id = self.conn.execute(select(c.id).where(cond)).scalar_one()
            # Only cache after commit: a rolled-back insert must not leave a stale id.
            self.after_commit(lambda: _ACCOUNT_IDS.__setitem__(key, acc_id))
            return acc_id
        _ACCOUNT_IDS[key] = row.id
        return str(row.id)

    def balance(self, ref: AccountRef) -> int:
        c = t.accounts.c
        row = self.conn.execute(
            select(c.balance_minor).where(
                and_(c.type == ref.type.value, c.owner_id == ref.owner, c.currency == ref.currency)
            )
        ).one_or_none()
        return 0 if row is None else int(row.balance_minor)

    def post(self, entry: JournalEntry, now: datetime) -> None:
        """Append a balanced entry and move the cached balances. A wallet that would go
        negative raises InsufficientFunds (and the caller's savepoint rolls back)."""
        self.conn.execute(
            insert(t.journal_entries).values(
                id=entry.id,
                kind=entry.kind.value,
                payment_id=entry.payment_id,
                memo=entry.memo[:200],
                created_at=now,
            )
        )
        rows = []
        for p in entry.postings:
            rows.append(
                {
                    "entry_id": entry.id,
                    "debit_account_id": self.account_id(p.debit, now),
                    "credit_account_id": self.account_id(p.credit, now),
                    "amount_minor": p.amount.amount_minor,
                    "currency": p.amount.currency,
                }
            )
        self.conn.execute(insert(t.postings), rows)
        c = t.accounts.c
        # Debits before credits in a stable order keeps lock order the same everywhere.
        for ref, delta in sorted(balance_deltas(entry.postings).items(), key=lambda kv: kv[1]):
            if delta == 0:
                continue
            acc = self.account_id(ref, now)
            stmt = update(t.accounts).where(c.id == acc)
            if delta < 0 and ref.type in NON_NEGATIVE:
                stmt = stmt.where(c.balance_minor >= -delta)
            res = self.conn.execute(stmt.values(balance_minor=c.balance_minor + delta))
            if res.rowcount != 1:
                raise InsufficientFunds(
                    "insufficient funds in the wallet", reason="INSUFFICIENT_FUNDS"
                )

    # -- payments ----------------------------------------------------------------------

    def insert_payment(self, p: Payment) -> None:
        self.conn.execute(insert(t.payments).values(**_payment_values(p)))

    def update_payment(self, p: Payment, expected_version: int) -> None:
        c = t.payments.c
        values = _payment_values(p)
        del values["id"]
        res = self.conn.execute(
            update(t.payments)
            .where(and_(c.id == p.id, c.version == expected_version))
            .values(**values)
        )
        if res.rowcount != 1:
            raise StaleWrite(f"payment {p.id} changed concurrently")

    def get_payment(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        stmt = select(t.payments.c.data).where(t.payments.c.id == payment_id)
        if for_update and self.is_postgres:
            stmt = stmt.with_for_update()
        row = self.conn.execute(stmt).one_or_none()
        return None if row is None else from_snapshot(json.loads(row.data))

    def get_payment_by_token(self, token: str, *, for_update: bool = False) -> Payment | None:
        stmt = select(t.payments.c.data).where(t.payments.c.qr_token == token)
        if for_update and self.is_postgres:
            stmt = stmt.with_for_update()
        row = self.conn.execute(stmt).one_or_none()
        return None if row is None else from_snapshot(json.loads(row.data))

    def list_payments(
        self,
        merchant_id: str,
        *,
        limit: int,
        before: tuple[datetime, str] | None = None,
        statuses: list[PaymentStatus] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        order_id: str | None = None,
        method: PaymentMethod | None = None,
    ) -> list[Payment]:
        c = t.payments.c
        conds: list[Any] = [c.merchant_id == merchant_id]
        if before is not None:
            at, pid = before
            conds.append((c.created_at < at) | and_(c.created_at == at, c.id < pid))
        if statuses:
            conds.append(c.status.in_([s.value for s in statuses]))
        if created_from is not None:
            conds.append(c.created_at >= created_from)
        if created_to is not None:
            conds.append(c.created_at < created_to)
        if order_id:
            conds.append(c.order_id == order_id)
        if method is not None:
            conds.append(c.method == method.value)
        rows = self.conn.execute(
            select(c.data)
            .where(and_(*conds))
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        ).all()
        return [from_snapshot(json.loads(r.data)) for r in rows]

    def due_for_expiry(self, now: datetime, limit: int) -> list[str]:
        c = t.payments.c
        rows = self.conn.execute(
            select(c.id)
            .where(and_(c.status == PaymentStatus.PENDING.value, c.expires_at <= now))
            .limit(limit)
        ).all()
        return [str(r.id) for r in rows]

    def payments_paid_between(
        self, merchant_id: str, start: datetime, end: datetime
    ) -> list[Payment]:
        c = t.payments.c
        rows = self.conn.execute(
            select(c.data).where(
                and_(c.merchant_id == merchant_id, c.paid_at >= start, c.paid_at < end)
            )
        ).all()
        return [from_snapshot(json.loads(r.data)) for r in rows]

    def payments_with_refunds_for(self, merchant_id: str, since: datetime) -> list[Payment]:
        c = t.payments.c
        rows = self.conn.execute(
            select(c.data).where(
                and_(c.merchant_id == merchant_id, c.refunded_minor > 0, c.paid_at >= since)
            )
        ).all()
        return [from_snapshot(json.loads(r.data)) for r in rows]

    # -- events ------------------------------------------------------------------------

    def append_event(self, merchant_id: str, type_: str, payment: Payment, now: datetime) -> Event:
        c = t.merchants.c
        seq = self.conn.execute(
            update(t.merchants)
            .where(c.id == merchant_id)
            .values(event_seq=c.event_seq + 1)
            .returning(c.event_seq)
        ).scalar_one()
        ev = Event(
            merchant_id=merchant_id,
            seq=int(seq),
            type=type_,
            payment_id=payment.id,
            data=json.dumps(snapshot(payment), separators=(",", ":")),
            occurred_at=now,
        )
        self.conn.execute(
            insert(t.events).values(
                merchant_id=ev.merchant_id,
                seq=ev.seq,
                type=ev.type,
                payment_id=ev.payment_id,
                data=ev.data,
                occurred_at=ev.occurred_at,
            )
        )
        return ev

    def read_events(self, merchant_id: str, after_seq: int, limit: int) -> list[Event]:
        c = t.events.c
        rows = self.conn.execute(
            select(t.events)
            .where(and_(c.merchant_id == merchant_id, c.seq > after_seq))
            .order_by(c.seq)
            .limit(limit)
        ).all()
        return [
            Event(r.merchant_id, int(r.seq), r.type, r.payment_id, r.data, r.occurred_at)
            for r in rows
        ]

    def last_event_seq(self, merchant_id: str) -> int:
        v = self.conn.execute(
            select(t.merchants.c.event_seq).where(t.merchants.c.id == merchant_id)
        ).scalar_one_or_none()
        return int(v or 0)

    # -- idempotency -------------------------------------------------------------------

    def get_idempotency(self, scope: str, key: str) -> tuple[str, bytes] | None:
        c = t.idempotency_records.c
        row = self.conn.execute(
            select(c.request_hash, c.response).where(and_(c.scope == scope, c.key == key))
        ).one_or_none()
        return None if row is None else (str(row.request_hash), bytes(row.response))

    def put_idempotency(
        self, scope: str, key: str, request_hash: str, response: bytes, now: datetime
    ) -> None:
        """Raises IntegrityError when another transaction stored the key first."""
        self.conn.execute(
            insert(t.idempotency_records).values(
                scope=scope, key=key, request_hash=request_hash, response=response, created_at=now
            )
        )

    # -- limits and wallet activity ------------------------------------------------------

    def spent_on(self, consumer_id: str, day: str) -> int:
        c = t.daily_spend.c
        v = self.conn.execute(
            select(c.spent_minor).where(and_(c.consumer_id == consumer_id, c.day == day))
        ).scalar_one_or_none()
        return int(v or 0)

    def add_spent(self, consumer_id: str, day: str, amount_minor: int) -> None:
        c = t.daily_spend.c
        res = self.conn.execute(
            update(t.daily_spend)
            .where(and_(c.consumer_id == consumer_id, c.day == day))
            .values(spent_minor=c.spent_minor + amount_minor)
        )
        if res.rowcount == 0:
            self.conn.execute(
                insert(t.daily_spend).values(
                    consumer_id=consumer_id, day=day, spent_minor=amount_minor
                )
            )

    def insert_activity(self, a: Activity) -> None:
        self.conn.execute(
            insert(t.wallet_activity).values(
                id=a.id,
                consumer_id=a.consumer_id,
                kind=a.kind,
                amount_minor=a.amount_minor,
                currency=a.currency,
                merchant_name=a.merchant_name,
                payment_id=a.payment_id,
                description=a.description[:200],
                created_at=a.created_at,
            )
        )

    def list_activity(self, consumer_id: str, before_id: str | None, limit: int) -> list[Activity]:
        c = t.wallet_activity.c
        conds: list[Any] = [c.consumer_id == consumer_id]
        if before_id:
            conds.append(c.id < before_id)
        rows = self.conn.execute(
            select(t.wallet_activity).where(and_(*conds)).order_by(c.id.desc()).limit(limit)
        ).all()
        return [
            Activity(
                r.id,
                r.consumer_id,
                r.kind,
                int(r.amount_minor),
                r.currency,
                r.merchant_name,
                r.payment_id,
                r.description,
                r.created_at,
            )
            for r in rows
        ]

    # -- FX ----------------------------------------------------------------------------

    def set_rate(self, base: str, quote: str, rate: str, now: datetime) -> None:
        c = t.fx_rates.c
        res = self.conn.execute(
            update(t.fx_rates)
            .where(and_(c.base == base, c.quote == quote))
            .values(rate=rate, updated_at=now)
        )
        if res.rowcount == 0:
            self.conn.execute(
                insert(t.fx_rates).values(base=base, quote=quote, rate=rate, updated_at=now)
            )

    def get_rate(self, base: str, quote: str) -> str | None:
        c = t.fx_rates.c
        v = self.conn.execute(
            select(c.rate).where(and_(c.base == base, c.quote == quote))
        ).scalar_one_or_none()
        return None if v is None else str(v)

    # -- checks ------------------------------------------------------------------------

    def ledger_check(self) -> list[str]:
        """Problems found: unbalanced entries, cached balances that differ from postings,
        negative wallets. Empty means healthy."""
        problems: list[str] = []
        p = t.postings.c
        a = t.accounts.c
        debits = dict(
            self.conn.execute(
                select(p.debit_account_id, func.sum(p.amount_minor)).group_by(p.debit_account_id)
            ).all()
        )
        credits = dict(
            self.conn.execute(
                select(p.credit_account_id, func.sum(p.amount_minor)).group_by(p.credit_account_id)
            ).all()
        )
        from psp_server.domain.ledger import AccountType

        for row in self.conn.execute(select(a.id, a.type, a.balance_minor)).all():
            dr = int(debits.get(row.id, 0) or 0)
            cr = int(credits.get(row.id, 0) or 0)
            derived = cr - dr if AccountType(row.type).credit_normal else dr - cr
            if derived != row.balance_minor:
                problems.append(
                    f"account {row.id}: cached {row.balance_minor} != derived {derived}"
                )
            if AccountType(row.type) in NON_NEGATIVE and row.balance_minor < 0:
                problems.append(f"account {row.id}: negative wallet {row.balance_minor}")
        return problems


def _merchant(row: Any) -> Merchant:
    return Merchant(
        id=row.id,
        code=row.code,
        name=row.name,
        city=row.city,
        country=row.country,
        currency=row.currency,
        mcc=row.mcc,
        discount_rate_bps=row.discount_rate_bps,
        created_at=row.created_at,
    )


def _payment_values(p: Payment) -> dict[str, Any]:
    assert p.refunded is not None
    return {
        "id": p.id,
        "merchant_id": p.merchant_id,
        "terminal_id": p.terminal_id,
        "method": p.method.value,
        "status": p.status.value,
        "order_id": p.order_id,
        "amount_minor": p.amount.amount_minor,
        "currency": p.amount.currency,
        "fee_minor": p.fee.amount_minor if p.fee else 0,
        "refunded_minor": p.refunded.amount_minor,
        "qr_token": p.qr_token,
        "payer_consumer_id": p.payer.consumer_id if p.payer else None,
        "created_at": p.created_at,
        "expires_at": p.expires_at,
        "paid_at": p.paid_at,
        "version": p.version,
        "data": json.dumps(snapshot(p), separators=(",", ":")),
    }
