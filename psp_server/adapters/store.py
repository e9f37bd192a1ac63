"""The SQL store: every query the services run, on one connection inside one
transaction (the unit of work). Implements ``service.ports.Store``."""

from __future__ import annotations

import contextlib
import json
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, text, update
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

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class Sql:
    """A hot-path statement in plain SQL with ``:name`` parameters, run on the DBAPI
    cursor of the unit of work's connection (same transaction, no per-call statement
    building). The PostgreSQL form (``%(name)s``) is made once."""

    __slots__ = ("pg", "sqlite")

    def __init__(self, sql: str) -> None:
        self.sqlite = sql
        self.pg = _NAMED.sub(r"%(\1)s", sql)


_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"

_Q_CONSUMER = Sql(
    "SELECT id, email, display_name, password_hash, currency, kyc_tier, failed_logins, "
    "locked_until, created_at FROM consumers WHERE id = :id"
)
_Q_BALANCE = Sql(
    "SELECT balance_minor FROM accounts WHERE type = :type AND owner_id = :owner "
    "AND currency = :currency"
)
_Q_ENTRY = Sql(
    "INSERT INTO journal_entries (id, kind, payment_id, memo, created_at) "
    "VALUES (:id, :kind, :payment_id, :memo, :created_at)"
)
_Q_POSTING = Sql(
    "INSERT INTO postings (entry_id, debit_account_id, credit_account_id, amount_minor, currency) "
    "VALUES (:entry_id, :debit, :credit, :amount, :currency)"
)
_Q_MOVE = Sql(
    "UPDATE accounts SET balance_minor = balance_minor + :delta WHERE id = :id "
    "RETURNING balance_minor"
)
_Q_MOVE_NONNEG = Sql(
    "UPDATE accounts SET balance_minor = balance_minor + :delta WHERE id = :id "
    "AND balance_minor + :delta >= 0 RETURNING balance_minor"
)
_PAYMENT_COLS = (
    "merchant_id, terminal_id, method, status, order_id, amount_minor, currency, fee_minor, "
    "refunded_minor, qr_token, payer_consumer_id, created_at, expires_at, paid_at, version, data"
)
_Q_INSERT_PAYMENT = Sql(
    f"INSERT INTO payments (id, {_PAYMENT_COLS}) VALUES (:id, "
    + ", ".join(":" + c.strip() for c in _PAYMENT_COLS.split(","))
    + ")"
)
# What a payment's life changes (status, capture, refunds, the payer, the snapshot); the
# other columns are fixed at creation. Leaving them out of the UPDATE spares rewriting the
# indexes on them (SQLite rewrites an index whose column is assigned, changed or not).
_PAYMENT_MUTABLE = (
    "status",
    "amount_minor",
    "fee_minor",
    "refunded_minor",
    "payer_consumer_id",
    "paid_at",
    "version",
    "data",
)
_Q_UPDATE_PAYMENT = Sql(
    "UPDATE payments SET "
    + ", ".join(f"{c} = :{c}" for c in _PAYMENT_MUTABLE)
    + " WHERE id = :id AND version = :expected_version"
)
_Q_PAYMENT = Sql("SELECT data FROM payments WHERE id = :id")
_Q_PAYMENT_FU = Sql("SELECT data FROM payments WHERE id = :id FOR UPDATE")
_Q_PAYMENT_TOKEN = Sql("SELECT data FROM payments WHERE qr_token = :token")
_Q_PAYMENT_TOKEN_FU = Sql("SELECT data FROM payments WHERE qr_token = :token FOR UPDATE")
_Q_NEXT_SEQ = Sql(
    "UPDATE merchants SET event_seq = event_seq + 1 WHERE id = :id RETURNING event_seq"
)
_Q_INSERT_EVENT = Sql(
    "INSERT INTO events (merchant_id, seq, type, payment_id, data, occurred_at) "
    "VALUES (:merchant_id, :seq, :type, :payment_id, :data, :occurred_at)"
)
# PostgreSQL: the counter, the row and the NOTIFY to the other server processes (delivered
# at commit, dropped with a rolled-back savepoint) in one round trip.
_PG_APPEND_EVENT = (
    "WITH s AS (UPDATE merchants SET event_seq = event_seq + 1 WHERE id = %(merchant_id)s "
    "RETURNING event_seq), "
    "e AS (INSERT INTO events (merchant_id, seq, type, payment_id, data, occurred_at) "
    "SELECT %(merchant_id)s, s.event_seq, %(type)s, %(payment_id)s, %(data)s, %(occurred_at)s "
    "FROM s RETURNING seq) "
    "SELECT e.seq, pg_notify('scanpay_events', CAST(%(merchant_id)s AS text) || ':' || e.seq) "
    "FROM e"
)
_Q_GET_IDEM = Sql(
    "SELECT request_hash, response FROM idempotency_records WHERE scope = :scope AND key = :key"
)
_Q_PUT_IDEM = Sql(
    "INSERT INTO idempotency_records (scope, key, request_hash, response, created_at) "
    "VALUES (:scope, :key, :hash, :response, :created_at)"
)
_Q_SPENT = Sql(
    "SELECT spent_minor FROM daily_spend WHERE consumer_id = :consumer_id AND day = :day"
)
_Q_ADD_SPENT = Sql(
    "INSERT INTO daily_spend (consumer_id, day, spent_minor) VALUES (:consumer_id, :day, :amount) "
    "ON CONFLICT (consumer_id, day) DO UPDATE "
    "SET spent_minor = daily_spend.spent_minor + excluded.spent_minor"
)
_Q_ACTIVITY = Sql(
    "INSERT INTO wallet_activity (id, consumer_id, kind, amount_minor, currency, merchant_name, "
    "payment_id, description, created_at) VALUES (:id, :consumer_id, :kind, :amount_minor, "
    ":currency, :merchant_name, :payment_id, :description, :created_at)"
)
_Q_STATIC = Sql("SELECT token, merchant_id, terminal_id FROM static_qrs WHERE token = :token")


# Keyed by the engine object itself (weakly): an id() could be reused by a new engine for
# another database once the old one is gone, and its cached account ids would be wrong.
_ENGINE_KEYS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _engine_key(conn: Connection) -> str:
    engine = conn.engine
    key = _ENGINE_KEYS.get(engine)
    if key is None:
        key = _ENGINE_KEYS[engine] = str(engine.url)
    return key


# Account ids never change once created: cache them per process.
_ACCOUNT_IDS: dict[tuple[str, str, str, str], str] = {}


# The last datetime turned into SQLite text, and that text (one entry, swapped whole).
_LAST_TS: list[tuple[datetime | None, str]] = [(None, "")]


class StaleWrite(RuntimeError):
    """An optimistic-concurrency check failed: someone else changed the row."""


class SqlStore:
    def __init__(self, conn: Connection, hooks: list[Callable[[], None]] | None = None) -> None:
        self.conn = conn
        self.hooks = hooks if hooks is not None else []
        self._db_key = _engine_key(conn)
        self.is_postgres = conn.dialect.name == "postgresql"
        self._cur: Any = None
        # PostgreSQL, inside deferring(): writes nobody reads a result of, waiting to go to
        # the server with the next statement.
        self._deferring = False
        self._deferred: list[tuple[str, dict[str, Any]]] = []
        self._new_accounts: dict[tuple[str, str, str, str], str] = {}

    # -- raw execution for the hot path ---------------------------------------------------

    def _cursor(self) -> Any:
        if self._cur is None:
            self._cur = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        return self._cur

    def _x(self, q: Sql, params: dict[str, Any] | None = None) -> Any:
        if self.is_postgres:
            return self._pg(q.pg, params or {})
        cur = self._cursor()
        cur.execute(q.sqlite, params or {})
        return cur

    def _pg(self, sql: str, params: dict[str, Any]) -> Any:
        """A statement on PostgreSQL; the deferred writes go with it, in one round trip."""
        cur = self._cursor()
        if not self._deferred:
            cur.execute(sql, params)
            return cur
        raw: Any = self.conn.connection.dbapi_connection
        pending, self._deferred = self._deferred, []
        with raw.pipeline(), raw.cursor() as writes:
            for q, p in pending:
                writes.execute(q, p)
            cur.execute(sql, params)
        return cur

    def _defer(self, q: Sql, params: dict[str, Any]) -> None:
        """A write whose result nobody reads. Inside ``deferring()`` on PostgreSQL it goes
        to the server with the next statement; elsewhere it runs now."""
        if self._deferring:
            self._deferred.append((q.pg, params))
        else:
            self._x(q, params)

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """On PostgreSQL, the writes of the store methods called inside that need no answer
        (a payment's insert, the day's spend, the wallet's activity) travel with the next
        statement that does, one round trip instead of one each; what is left goes when the
        block ends. Only for runs of this store's own methods: a statement sent another
        way meanwhile would overtake them. An error in one of them is raised by the
        statement it travels with. On SQLite (no round trips) it changes nothing."""
        if not self.is_postgres or self._deferring:
            yield
            return
        self._deferring = True
        try:
            yield
            if self._deferred:
                self._pg("SELECT 1", {})
        finally:
            self._deferring = False
            self._deferred = []

    def _ts(self, value: datetime | None) -> Any:
        if value is None or self.is_postgres:
            return value
        last = _LAST_TS[0]
        if last[0] is value:  # a job stamps many rows with the same "now"
            return last[1]
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        # The text SQLAlchemy's SQLite DateTime stores: "YYYY-MM-DD HH:MM:SS.ffffff".
        text = utc.replace(tzinfo=None).isoformat(" ", "microseconds")
        _LAST_TS[0] = (value, text)
        return text

    def _dt(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

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
        row = self._x(_Q_STATIC, {"token": token}).fetchone()
        return None if row is None else StaticQr(row[0], row[1], row[2])

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
        row = self._x(_Q_CONSUMER, {"id": consumer_id}).fetchone()
        if row is None:
            return None
        return Consumer(
            id=row[0],
            email=row[1],
            display_name=row[2],
            password_hash=row[3],
            currency=row[4],
            kyc_tier=int(row[5]),
            failed_logins=int(row[6]),
            locked_until=self._dt(row[7]),
            created_at=self._dt(row[8]),  # type: ignore[arg-type]
        )

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
        # ref.type is a StrEnum: it hashes and compares as its text, without .value's cost.
        key = (self._db_key, ref.type, ref.owner, ref.currency)
        cached = _ACCOUNT_IDS.get(key) or self._new_accounts.get(key)
        if cached is not None:
            return cached
        c = t.accounts.c
        cond = and_(c.type == ref.type.value, c.owner_id == ref.owner, c.currency == ref.currency)
        row = self.conn.execute(select(c.id).where(cond)).one_or_none()
        if row is None:
            acc_id = ids.new_id("acc")
            try:
                with self.conn.begin_nested():
                    self.conn.execute(
                        insert(t.accounts).values(
                            id=acc_id,
                            type=ref.type.value,
                            owner_id=ref.owner,
                            currency=ref.currency,
                            balance_minor=0,
                            created_at=now,
                        )
                    )
            except IntegrityError:
                acc_id = self.conn.execute(select(c.id).where(cond)).scalar_one()
        else:
            acc_id = str(row.id)
        # Remember it for the process only once committed: a row made (or first seen)
        # inside a transaction that then rolls back must not be remembered.
        self._new_accounts[key] = acc_id
        self.after_commit(lambda: _ACCOUNT_IDS.__setitem__(key, acc_id))
        return acc_id

    def balance(self, ref: AccountRef) -> int:
        row = self._x(
            _Q_BALANCE, {"type": ref.type.value, "owner": ref.owner, "currency": ref.currency}
        ).fetchone()
        return 0 if row is None else int(row[0])

    def post(self, entry: JournalEntry, now: datetime) -> dict[AccountRef, int]:
        """Append a balanced entry and move the cached balances; returns the new balance
        of every account touched. A wallet that would go negative raises
        InsufficientFunds (and the caller's savepoint rolls everything back)."""
        entry_row = {
            "id": entry.id,
            "kind": entry.kind.value,
            "payment_id": entry.payment_id,
            "memo": entry.memo[:200],
            "created_at": self._ts(now),
        }
        postings = [
            {
                "entry_id": entry.id,
                "debit": self.account_id(p.debit, now),
                "credit": self.account_id(p.credit, now),
                "amount": p.amount.amount_minor,
                "currency": p.amount.currency,
            }
            for p in entry.postings
        ]
        # Debits before credits in a stable order keeps lock order the same everywhere.
        moves = [
            (
                ref,
                _Q_MOVE_NONNEG if delta < 0 and ref.type in NON_NEGATIVE else _Q_MOVE,
                {"delta": delta, "id": self.account_id(ref, now)},
            )
            for ref, delta in sorted(balance_deltas(entry.postings).items(), key=lambda kv: kv[1])
            if delta != 0
        ]
        moved: Iterable[tuple[AccountRef, Any]]
        if self.is_postgres:
            moved = self._post_pipelined(entry_row, postings, moves)
        else:
            self._x(_Q_ENTRY, entry_row)
            for params in postings:
                self._x(_Q_POSTING, params)
            # One at a time: the first refused move ends it.
            moved = ((ref, self._x(q, params).fetchone()) for ref, q, params in moves)
        out: dict[AccountRef, int] = {}
        for ref, row in moved:
            if row is None:
                raise InsufficientFunds(
                    "insufficient funds in the wallet", reason="INSUFFICIENT_FUNDS"
                )
            out[ref] = int(row[0])
        return out

    def _post_pipelined(
        self,
        entry_row: dict[str, Any],
        postings: list[dict[str, Any]],
        moves: list[tuple[AccountRef, Sql, dict[str, Any]]],
    ) -> list[tuple[AccountRef, Any]]:
        """PostgreSQL: the entry, its postings and the balance moves go to the server in
        one round trip (psycopg's pipeline mode), five or more before. An error in any of
        them is raised when the pipeline ends, before anything else runs."""
        raw = self.conn.connection.dbapi_connection
        assert raw is not None
        cur = self._cursor()
        results: list[tuple[AccountRef, Any]] = []
        pending, self._deferred = self._deferred, []
        with raw.pipeline():
            for sql, deferred in pending:
                cur.execute(sql, deferred)
            cur.execute(_Q_ENTRY.pg, entry_row)
            for params in postings:
                cur.execute(_Q_POSTING.pg, params)
            for ref, q, params in moves:
                # A cursor each: a result read after the pipeline is the statement's own.
                move = raw.cursor()
                move.execute(q.pg, params)
                results.append((ref, move))
        moved = [(ref, move.fetchone()) for ref, move in results]
        for _, move in results:
            move.close()
        return moved

    # -- payments ----------------------------------------------------------------------

    def insert_payment(self, p: Payment) -> str:
        """Insert; returns the JSON snapshot written (reuse it for the event)."""
        values = self._payment_params(p)
        self._defer(_Q_INSERT_PAYMENT, values)
        return str(values["data"])

    def _payment_params(self, p: Payment) -> dict[str, Any]:
        values = _payment_values(p)
        for k in ("created_at", "expires_at", "paid_at"):
            values[k] = self._ts(values[k])
        return values

    def update_payment(self, p: Payment, expected_version: int) -> str:
        values = self._payment_params(p)
        values["expected_version"] = expected_version
        if self._x(_Q_UPDATE_PAYMENT, values).rowcount != 1:
            raise StaleWrite(f"payment {p.id} changed concurrently")
        return str(values["data"])

    def get_payment(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        q = _Q_PAYMENT_FU if for_update and self.is_postgres else _Q_PAYMENT
        row = self._x(q, {"id": payment_id}).fetchone()
        return None if row is None else from_snapshot(json.loads(row[0]))

    def get_payment_by_token(self, token: str, *, for_update: bool = False) -> Payment | None:
        q = _Q_PAYMENT_TOKEN_FU if for_update and self.is_postgres else _Q_PAYMENT_TOKEN
        row = self._x(q, {"token": token}).fetchone()
        return None if row is None else from_snapshot(json.loads(row[0]))

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

    def append_event(
        self,
        merchant_id: str,
        type_: str,
        payment: Payment,
        now: datetime,
        data: str | None = None,
    ) -> Event:
        """The merchant's next event, in this transaction. On PostgreSQL the other server
        processes are told of it (NOTIFY) when the transaction commits."""
        data = data or json.dumps(snapshot(payment), separators=(",", ":"))
        params = {
            "merchant_id": merchant_id,
            "type": type_,
            "payment_id": payment.id,
            "data": data,
            "occurred_at": self._ts(now),
        }
        if self.is_postgres:
            row = self._pg(_PG_APPEND_EVENT, params).fetchone()
        else:
            row = self._x(_Q_NEXT_SEQ, {"id": merchant_id}).fetchone()
            if row is not None:
                self._x(_Q_INSERT_EVENT, {**params, "seq": row[0]})
        if row is None:
            raise LookupError(f"no merchant {merchant_id}")
        return Event(
            merchant_id=merchant_id,
            seq=int(row[0]),
            type=type_,
            payment_id=payment.id,
            data=data,
            occurred_at=now,
            payment=payment,
        )

    def event_log_head(self) -> int:
        """The newest row of the event log across merchants (SQLite rowid)."""
        v = self.conn.execute(text("SELECT max(rowid) FROM events")).scalar()
        return int(v or 0)

    def event_log_after(self, rowid: int, limit: int = 2000) -> list[tuple[int, str, int]]:
        """(rowid, merchant id, seq) of event rows written after ``rowid``, any process."""
        rows = self.conn.execute(
            text(
                "SELECT rowid, merchant_id, seq FROM events WHERE rowid > :after "
                "ORDER BY rowid LIMIT :limit"
            ),
            {"after": rowid, "limit": limit},
        ).all()
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]

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
        row = self._x(_Q_GET_IDEM, {"scope": scope, "key": key}).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    def put_idempotency(
        self, scope: str, key: str, request_hash: str, response: bytes, now: datetime
    ) -> None:
        """Raises IntegrityError (DBAPI) when another transaction stored the key first."""
        self._x(
            _Q_PUT_IDEM,
            {
                "scope": scope,
                "key": key,
                "hash": request_hash,
                "response": response,
                "created_at": self._ts(now),
            },
        )

    # -- limits and wallet activity ------------------------------------------------------

    def spent_on(self, consumer_id: str, day: str) -> int:
        row = self._x(_Q_SPENT, {"consumer_id": consumer_id, "day": day}).fetchone()
        return 0 if row is None else int(row[0])

    def add_spent(self, consumer_id: str, day: str, amount_minor: int) -> None:
        self._defer(_Q_ADD_SPENT, {"consumer_id": consumer_id, "day": day, "amount": amount_minor})

    def insert_activity(self, a: Activity) -> None:
        self._defer(
            _Q_ACTIVITY,
            {
                "id": a.id,
                "consumer_id": a.consumer_id,
                "kind": a.kind,
                "amount_minor": a.amount_minor,
                "currency": a.currency,
                "merchant_name": a.merchant_name,
                "payment_id": a.payment_id,
                "description": a.description[:200],
                "created_at": self._ts(a.created_at),
            },
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
        problems += self._payment_row_problems()
        return problems

    def _payment_row_problems(self) -> list[str]:
        """A payment's lookup columns must say what its snapshot says (an update writes
        only the columns a payment's life changes: one that changed another would show)."""
        c = t.payments.c
        cols = [col for col in t.payments.columns if col.name not in ("id", "data")]
        problems: list[str] = []
        for row in self.conn.execute(select(c.id, c.data, *cols)).all():
            want = _payment_values(from_snapshot(json.loads(row.data)))
            for col in cols:
                have = getattr(row, col.name)
                expected = want[col.name]
                if isinstance(have, datetime):
                    have = self._dt(have)
                if have != expected:
                    problems.append(
                        f"payment {row.id}: column {col.name} is {have!r}, "
                        f"the payment says {expected!r}"
                    )
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
