"""The till's on-disk memory: unfinished operations and the payment stream's cursor.

A money-moving request (checkout, card sale, refund, cancel, void, batch close) is written
here, with its idempotency key, and forced to disk *before* it is sent. If the till dies or
the network drops while the request is in flight, the next attempt reuses the same key, so
the PSP answers with the payment it already made instead of making a second one.

``journal.log`` is a log of JSON records, one a line, written into space that was filled with
zeros ahead of time, each write followed by ``fdatasync``. Overwriting blocks that already
exist changes no file metadata, so the flush is a plain data write and does not wait for the
file system's journal (measured here: the tail of an appending flush is one to two orders of
magnitude longer under load). The first zero byte marks the end; a torn last record (a crash
mid-write) is ignored on load. The log is compacted at start-up and when its space runs out.

Only what is needed to repeat a request lives here: never card track data.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Kind = Literal["checkout", "card", "refund", "void", "cancel", "batch"]

LOG_NAME = "journal.log"
CURSOR_NAME = "cursor"
#: Zero-filled space the log grows into (about 300 records).
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Entry:
    """One unfinished mutating request."""

    kind: Kind
    idempotency_key: str
    order_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    description: str = ""
    payment_id: str = ""
    created_at: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def new_key() -> str:
    return uuid.uuid4().hex


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Pending entries and the order counter in ``journal.log``; the cursor in ``cursor``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / LOG_NAME
        self._cursor_path = self.dir / CURSOR_NAME
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._order_day = ""
        self._order_seq = 0
        self._fd = -1
        self._offset = 0
        self._size = 0
        self._load()
        self._compact()

    # -- the log ---------------------------------------------------------------------

    def _apply(self, record: dict[str, Any]) -> None:
        op = record.get("op")
        if op == "put":
            entry = Entry(**record["entry"])
            self._entries[entry.idempotency_key] = entry
        elif op == "del":
            self._entries.pop(record["key"], None)
        if "order_day" in record:
            self._order_day = record["order_day"]
            self._order_seq = int(record["order_seq"])

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        end = raw.find(b"\0")
        for line in (raw if end < 0 else raw[:end]).split(b"\n"):
            if not line.strip():
                continue
            try:
                self._apply(json.loads(line))
            except (ValueError, TypeError, KeyError):
                # Only the last line can be torn (appends are sequential); skip it.
                continue

    def _snapshot(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = [
            {"op": "put", "entry": asdict(e)} for e in self._entries.values()
        ]
        records.append({"op": "seq", "order_day": self._order_day, "order_seq": self._order_seq})
        return records

    def _compact(self, room: int = 0) -> None:
        """Rewrite the log as just what is pending, plus zeroed space (atomic)."""
        body = "".join(json.dumps(r) + "\n" for r in self._snapshot()).encode()
        size = (len(body) + room) // CHUNK * CHUNK + CHUNK
        tmp = self.path.with_name(f".{LOG_NAME}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body + b"\0" * (size - len(body)))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.replace(tmp, self.path)
        _fsync_dir(self.dir)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._offset, self._size = fd, len(body), size

    def _append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record) + "\n").encode()
        if self._offset + len(data) >= self._size:
            # Out of room: start afresh from what is pending (this record included).
            self._apply(record)
            self._compact(room=len(data))
            return
        os.pwrite(self._fd, data, self._offset)
        _sync(self._fd)
        self._offset += len(data)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- pending operations --------------------------------------------------------

    def record(self, entry: Entry) -> Entry:
        """Durably remember ``entry`` (call before sending its request)."""
        if not entry.created_at:
            entry = replace(entry, created_at=datetime.now(UTC).isoformat())
        with self._lock:
            self._entries[entry.idempotency_key] = entry
            self._append({"op": "put", "entry": asdict(entry)})
        return entry

    def record_order(self, entry: Entry, prefix: str = "") -> Entry:
        """Give ``entry`` the next order number and remember both in one disk flush."""
        today = datetime.now().strftime("%y%m%d")
        with self._lock:
            if today != self._order_day:
                self._order_day, self._order_seq = today, 0
            self._order_seq += 1
            entry = replace(
                entry,
                order_id=f"{prefix}{today}-{self._order_seq:04d}",
                created_at=entry.created_at or datetime.now(UTC).isoformat(),
            )
            self._entries[entry.idempotency_key] = entry
            self._append(
                {
                    "op": "put",
                    "entry": asdict(entry),
                    "order_day": self._order_day,
                    "order_seq": self._order_seq,
                }
            )
        return entry

    def update(self, key: str, **changes: Any) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry = replace(entry, **changes)
            self._entries[key] = entry
            self._append({"op": "put", "entry": asdict(entry)})
            return entry

    def finish(self, key: str) -> None:
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._append({"op": "del", "key": key})

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def pending(self, kind: Kind | None = None) -> list[Entry]:
        return [e for e in self._entries.values() if kind is None or e.kind == kind]

    def find(self, kind: Kind, payment_id: str) -> Entry | None:
        """The unfinished ``kind`` request about ``payment_id`` (to reuse its key)."""
        for entry in self._entries.values():
            if entry.kind == kind and entry.payment_id == payment_id:
                return entry
        return None

    def next_order_id(self, prefix: str = "") -> str:
        """``YYMMDD-NNNN``, unique per till and day (upper case, fits QR alphanumeric mode)."""
        today = datetime.now().strftime("%y%m%d")
        with self._lock:
            if today != self._order_day:
                self._order_day, self._order_seq = today, 0
            self._order_seq += 1
            self._append({"op": "seq", "order_day": today, "order_seq": self._order_seq})
            return f"{prefix}{today}-{self._order_seq:04d}"

    # -- stream cursor -------------------------------------------------------------------

    @property
    def cursor(self) -> str:
        try:
            return self._cursor_path.read_text("utf-8").strip()
        except FileNotFoundError:
            return ""

    def set_cursor(self, cursor: str) -> None:
        # Replaced atomically but not flushed: losing the last few cursors only means the
        # stream replays a few events on restart, which the till applies idempotently.
        tmp = self._cursor_path.with_name(f".{CURSOR_NAME}.tmp")
        tmp.write_text(cursor, "utf-8")
        os.replace(tmp, self._cursor_path)
