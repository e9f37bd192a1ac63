"""The simulator's state: one SQLite file (WAL, synchronous=FULL) in the data directory.

Tables: ``requests`` (idempotency: every request key with its stored answer),
``txns`` (authorizations, sales and refunds with their hold/capture/settlement status),
``tombstones`` (reversals that arrived before, or instead of, their original),
``batches``, ``settlement_rows`` and ``representments`` (the merchant's answer to a
chargeback and the issuer's decision, one per charged-back transaction). Every request is
processed in one transaction that is committed before the answer is sent, so a SIGKILL
never loses an acknowledged effect.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psp_server.cardnet.settlement import SettlementRow

DB_NAME = "cardnet.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response TEXT,                -- JSON message; NULL: the network never answered
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS txns (
    ntid TEXT PRIMARY KEY,
    kind TEXT NOT NULL,           -- auth | sale | refund
    request_key TEXT NOT NULL UNIQUE,
    acquirer_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    pan TEXT NOT NULL,
    issuer_id TEXT NOT NULL,
    funding TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    merchant_reference TEXT NOT NULL,
    response_code TEXT NOT NULL,
    auth_code TEXT,
    status TEXT NOT NULL,         -- declined | held | captured | reversed | settled
    captured_minor INTEGER,
    original_ntid TEXT,
    created_at TEXT NOT NULL,
    hold_expires_at TEXT,
    batch_id TEXT,
    disputed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS txns_pan ON txns (pan, currency, status);
CREATE INDEX IF NOT EXISTS txns_open ON txns (acquirer_id, merchant_id, status, batch_id);
CREATE TABLE IF NOT EXISTS tombstones (
    original_key TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    acquirer_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    closed_at TEXT NOT NULL,
    settlement_date TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settlement_rows (
    batch_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    merchant_id TEXT NOT NULL,
    network_transaction_id TEXT NOT NULL,
    merchant_reference TEXT NOT NULL,
    type TEXT NOT NULL,
    gross INTEGER NOT NULL,
    interchange INTEGER NOT NULL,
    scheme_fee INTEGER NOT NULL,
    net INTEGER NOT NULL,
    currency TEXT NOT NULL,
    settlement_date TEXT NOT NULL,
    PRIMARY KEY (batch_id, seq)
);
CREATE TABLE IF NOT EXISTS representments (
    ntid TEXT PRIMARY KEY,        -- the charged-back transaction
    request_key TEXT NOT NULL,
    evidence TEXT NOT NULL,
    decision TEXT NOT NULL,       -- won | lost
    decided_at TEXT NOT NULL,
    batch_id TEXT                 -- won: the batch whose file carries the reversal row
);
"""


def ts(at: datetime) -> str:
    """A fixed-width UTC timestamp, so that text comparison is time comparison."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class Txn:
    ntid: str
    kind: str
    request_key: str
    acquirer_id: str
    merchant_id: str
    terminal_id: str
    pan: str
    issuer_id: str
    funding: str
    amount_minor: int
    currency: str
    merchant_reference: str
    response_code: str
    auth_code: str | None
    status: str
    captured_minor: int | None
    original_ntid: str | None
    created_at: str
    hold_expires_at: str | None
    batch_id: str | None
    disputed: int

    def __repr__(self) -> str:
        return f"Txn(ntid={self.ntid!r}, kind={self.kind!r}, status={self.status!r})"


_TXN_COLUMNS = tuple(f.name for f in fields(Txn))


@dataclass(frozen=True, slots=True)
class StoredRequest:
    request_hash: str
    response: str | None


@dataclass(frozen=True, slots=True)
class Representment:
    ntid: str
    request_key: str
    evidence: str
    decision: str  # won | lost
    decided_at: str
    batch_id: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    acquirer_id: str
    merchant_id: str
    closed_at: str
    settlement_date: str


class Store:
    def __init__(self, data_dir: str | Path, *, readonly: bool = False) -> None:
        self.data_dir = Path(data_dir)
        path = self.data_dir / DB_NAME
        if readonly:
            self._db = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- idempotency ------------------------------------------------------------------------

    def get_request(self, key: str) -> StoredRequest | None:
        row = self._db.execute(
            "SELECT request_hash, response FROM requests WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else StoredRequest(row[0], row[1])

    def put_request(self, key: str, request_hash: str, response: str | None, now: datetime) -> None:
        self._db.execute(
            "INSERT INTO requests (key, request_hash, response, created_at) VALUES (?, ?, ?, ?)",
            (key, request_hash, response, ts(now)),
        )

    def add_tombstone(self, original_key: str, now: datetime) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO tombstones (original_key, created_at) VALUES (?, ?)",
            (original_key, ts(now)),
        )

    def has_tombstone(self, key: str) -> bool:
        row = self._db.execute("SELECT 1 FROM tombstones WHERE original_key = ?", (key,))
        return row.fetchone() is not None

    # --- transactions -----------------------------------------------------------------------

    def insert_txn(self, txn: Txn) -> None:
        cols = ", ".join(_TXN_COLUMNS)
        marks = ", ".join("?" for _ in _TXN_COLUMNS)
        values = tuple(getattr(txn, c) for c in _TXN_COLUMNS)
        self._db.execute(f"INSERT INTO txns ({cols}) VALUES ({marks})", values)

    def update_txn(self, ntid: str, **changes: Any) -> None:
        bad = set(changes) - set(_TXN_COLUMNS)
        if bad:
            raise ValueError(f"unknown columns {sorted(bad)}")
        sets = ", ".join(f"{c} = ?" for c in changes)
        self._db.execute(f"UPDATE txns SET {sets} WHERE ntid = ?", (*changes.values(), ntid))

    def _txns(self, where: str, params: tuple[Any, ...]) -> list[Txn]:
        cols = ", ".join(_TXN_COLUMNS)
        rows = self._db.execute(f"SELECT {cols} FROM txns WHERE {where}", params).fetchall()
        return [Txn(*row) for row in rows]

    def txn_by_key(self, request_key: str) -> Txn | None:
        found = self._txns("request_key = ?", (request_key,))
        return found[0] if found else None

    def txn_by_ntid(self, ntid: str) -> Txn | None:
        found = self._txns("ntid = ?", (ntid,))
        return found[0] if found else None

    def used_minor(self, pan: str, currency: str, now: datetime) -> int:
        """What the cardholder has used of the limit: live holds, captures not charged
        back (or whose chargeback was reversed), minus refunds."""
        row = self._db.execute(
            """SELECT
                 COALESCE(SUM(CASE WHEN kind != 'refund' AND status = 'held'
                                    AND hold_expires_at > ? THEN amount_minor END), 0)
               + COALESCE(SUM(CASE WHEN kind != 'refund' AND status IN ('captured', 'settled')
                                    AND (disputed = 0 OR ntid IN (SELECT ntid FROM
                                         representments WHERE decision = 'won'))
                                    THEN captured_minor END), 0)
               - COALESCE(SUM(CASE WHEN kind = 'refund' AND status IN ('captured', 'settled')
                                   THEN amount_minor END), 0)
               FROM txns WHERE pan = ? AND currency = ?""",
            (ts(now), pan, currency),
        ).fetchone()
        return int(row[0])

    def refunded_minor(self, original_ntid: str) -> int:
        row = self._db.execute(
            """SELECT COALESCE(SUM(amount_minor), 0) FROM txns
               WHERE original_ntid = ? AND kind = 'refund'
                 AND status IN ('captured', 'settled')""",
            (original_ntid,),
        ).fetchone()
        return int(row[0])

    def open_items(self, acquirer_id: str, merchant_id: str) -> list[Txn]:
        return self._txns(
            "acquirer_id = ? AND merchant_id = ? AND status = 'captured' AND batch_id IS NULL"
            " ORDER BY created_at, ntid",
            (acquirer_id, merchant_id),
        )

    def active_holds(self, now: datetime, pan: str | None = None) -> list[Txn]:
        """Authorization holds not captured, reversed or expired."""
        if pan is None:
            return self._txns(
                "status = 'held' AND hold_expires_at > ? ORDER BY created_at", (ts(now),)
            )
        return self._txns(
            "status = 'held' AND hold_expires_at > ? AND pan = ? ORDER BY created_at",
            (ts(now), pan),
        )

    def transactions(self, pan: str | None = None) -> list[Txn]:
        if pan is None:
            return self._txns("1 = 1 ORDER BY created_at, ntid", ())
        return self._txns("pan = ? ORDER BY created_at, ntid", (pan,))

    # --- representments ---------------------------------------------------------------------

    def get_representment(self, ntid: str) -> Representment | None:
        row = self._db.execute(
            "SELECT ntid, request_key, evidence, decision, decided_at, batch_id"
            " FROM representments WHERE ntid = ?",
            (ntid,),
        ).fetchone()
        return None if row is None else Representment(*row)

    def insert_representment(self, r: Representment) -> None:
        self._db.execute(
            "INSERT INTO representments (ntid, request_key, evidence, decision, decided_at,"
            " batch_id) VALUES (?, ?, ?, ?, ?, ?)",
            (r.ntid, r.request_key, r.evidence, r.decision, r.decided_at, r.batch_id),
        )

    def unsettled_reversals(self, acquirer_id: str, merchant_id: str) -> list[Representment]:
        """Won representments of the merchant's transactions whose reversal is in no batch
        yet, in the order decided."""
        rows = self._db.execute(
            "SELECT r.ntid, r.request_key, r.evidence, r.decision, r.decided_at, r.batch_id"
            " FROM representments r JOIN txns t ON t.ntid = r.ntid"
            " WHERE r.decision = 'won' AND r.batch_id IS NULL"
            " AND t.acquirer_id = ? AND t.merchant_id = ? ORDER BY r.decided_at, r.ntid",
            (acquirer_id, merchant_id),
        ).fetchall()
        return [Representment(*r) for r in rows]

    def settle_reversal(self, ntid: str, batch_id: str) -> None:
        self._db.execute("UPDATE representments SET batch_id = ? WHERE ntid = ?", (batch_id, ntid))

    def chargeback_row(self, ntid: str) -> SettlementRow | None:
        row = self._db.execute(
            "SELECT batch_id, merchant_id, network_transaction_id, merchant_reference, type,"
            " gross, interchange, scheme_fee, net, currency, settlement_date"
            " FROM settlement_rows WHERE network_transaction_id = ? AND type = 'chargeback'",
            (ntid,),
        ).fetchone()
        return None if row is None else SettlementRow(*row)

    # --- batches ----------------------------------------------------------------------------

    def batch_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])

    def insert_batch(self, batch: Batch, rows: list[SettlementRow]) -> None:
        self._db.execute(
            "INSERT INTO batches (batch_id, acquirer_id, merchant_id, closed_at, settlement_date)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                batch.batch_id,
                batch.acquirer_id,
                batch.merchant_id,
                batch.closed_at,
                batch.settlement_date,
            ),
        )
        self._db.executemany(
            "INSERT INTO settlement_rows (batch_id, seq, merchant_id, network_transaction_id,"
            " merchant_reference, type, gross, interchange, scheme_fee, net, currency,"
            " settlement_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.batch_id,
                    seq,
                    r.merchant_id,
                    r.network_transaction_id,
                    r.merchant_reference,
                    r.type,
                    r.gross,
                    r.interchange,
                    r.scheme_fee,
                    r.net,
                    r.currency,
                    r.settlement_date,
                )
                for seq, r in enumerate(rows)
            ],
        )

    def batches(self) -> list[Batch]:
        rows = self._db.execute(
            "SELECT batch_id, acquirer_id, merchant_id, closed_at, settlement_date"
            " FROM batches ORDER BY closed_at, batch_id"
        ).fetchall()
        return [Batch(*r) for r in rows]

    def settlement_rows(self, batch_id: str) -> list[SettlementRow]:
        rows = self._db.execute(
            "SELECT batch_id, merchant_id, network_transaction_id, merchant_reference, type,"
            " gross, interchange, scheme_fee, net, currency, settlement_date"
            " FROM settlement_rows WHERE batch_id = ? ORDER BY seq",
            (batch_id,),
        ).fetchall()
        return [SettlementRow(*r) for r in rows]

    def chargebacks(self, merchant_id: str | None = None) -> list[SettlementRow]:
        sql = (
            "SELECT batch_id, merchant_id, network_transaction_id, merchant_reference, type,"
            " gross, interchange, scheme_fee, net, currency, settlement_date"
            " FROM settlement_rows WHERE type = 'chargeback'"
        )
        params: tuple[str, ...] = ()
        if merchant_id is not None:
            sql += " AND merchant_id = ?"
            params = (merchant_id,)
        rows = self._db.execute(sql + " ORDER BY batch_id, seq", params).fetchall()
        return [SettlementRow(*r) for r in rows]
