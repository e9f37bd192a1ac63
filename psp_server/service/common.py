"""Pieces every use case shares: idempotency inside the effect's transaction, input
checks, and the dependencies (database, clock, settings, event bus)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from psp_server.adapters.store import SqlStore
from psp_server.config import Settings
from psp_server.domain.errors import IdempotencyKeyReused, ValidationError
from psp_server.domain.money import Money, MoneyError
from psp_server.domain.parties import Event
from psp_server.service.clock import Clock
from psp_server.service.events import EventBus, Notice
from psp_server.service.runtime import Database, Retry

T = TypeVar("T")

MAX_KEY = 128
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
# No single payment may be larger than this many minor units (10^10: 100 million EUR).
MAX_PAYMENT_MINOR = 10**10


@dataclass(frozen=True, slots=True)
class Idem:
    """A client's idempotency key for one RPC: ``scope`` names who and which call."""

    scope: str
    key: str
    request_hash: str


@dataclass
class Deps:
    db: Database
    clock: Clock
    settings: Settings
    bus: EventBus


def check_key(key: str) -> str:
    if not key:
        raise ValidationError(
            "idempotency_key is required for this call", reason="IDEMPOTENCY_KEY_REQUIRED"
        )
    if not _KEY_RE.match(key):
        raise ValidationError(
            "idempotency_key must be 1-128 printable ASCII characters without spaces",
            reason="INVALID_IDEMPOTENCY_KEY",
        )
    return key


def once(
    store: SqlStore,
    idem: Idem,
    now: datetime,
    run: Callable[[], T],
    encode: Callable[[T], bytes],
) -> bytes:
    """Run ``run`` at most once per (scope, key), in the caller's transaction; return the
    stored response bytes, identical on every replay."""
    hit = store.get_idempotency(idem.scope, idem.key)
    if hit is not None:
        if hit[0] != idem.request_hash:
            raise IdempotencyKeyReused(
                "this idempotency key was already used for a different request",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return hit[1]
    blob = encode(run())
    try:
        store.put_idempotency(idem.scope, idem.key, idem.request_hash, blob, now)
    except Exception as exc:
        if not is_unique_violation(exc):
            raise
        # Another replica stored the same key first: its effect wins; ours rolls back
        # with the job's savepoint, and the job runs again to return the stored answer.
        raise Retry() from None
    return blob


def is_unique_violation(exc: BaseException) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return type(exc).__name__ in ("IntegrityError", "UniqueViolation")


def check_text(value: str, field: str, *, max_len: int, required: bool = False) -> str:
    if required and not value.strip():
        raise ValidationError(f"{field} is required", reason="MISSING_FIELD", field=field)
    if len(value) > max_len:
        raise ValidationError(
            f"{field} is longer than {max_len} characters", reason="FIELD_TOO_LONG", field=field
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError(
            f"{field} contains control characters", reason="INVALID_CHARACTERS", field=field
        )
    return value


def money(amount_minor: int, currency: str, *, field: str = "amount") -> Money:
    """A positive amount within bounds, in a known currency."""
    if not currency:
        raise ValidationError(f"{field}.currency is required", reason="MISSING_FIELD", field=field)
    try:
        m = Money(amount_minor, currency)
    except MoneyError as exc:
        raise ValidationError(str(exc), reason=exc.reason, field=field) from None
    if m.amount_minor <= 0:
        raise ValidationError(f"{field} must be positive", reason="INVALID_AMOUNT", field=field)
    if m.amount_minor > MAX_PAYMENT_MINOR:
        raise ValidationError(f"{field} is too large", reason="AMOUNT_TOO_LARGE", field=field)
    return m


def publish_after_commit(store: SqlStore, bus: EventBus, ev: Event) -> None:
    store.after_commit(lambda: bus.publish(Notice(ev.merchant_id, ev.seq, ev)))
