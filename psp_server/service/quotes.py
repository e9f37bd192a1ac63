"""Quotes are signed, self-contained tokens: what the consumer saw and agreed to pay
(amount, the locked FX rate, who may use it, until when). No database row is needed, any
replica can verify one, and nobody can alter one without the server's secret."""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from psp_server.domain.errors import PreconditionFailed, ValidationError


@dataclass(frozen=True, slots=True)
class QuoteData:
    consumer_id: str
    merchant_id: str
    payment_id: str  # "" for a static QR
    static_token: str  # "" for a dynamic QR
    amount_minor: int
    currency: str
    payer_amount_minor: int
    payer_currency: str
    rate: str  # "" when no conversion
    expires_at: int  # unix seconds


_FIELDS = tuple(QuoteData.__dataclass_fields__)


def _sig(secret: bytes, body: bytes) -> str:
    mac = hmac.digest(secret, b"quote:" + body, "sha256")[:18]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def sign(secret: bytes, q: QuoteData) -> str:
    body = (
        base64.urlsafe_b64encode(
            json.dumps({f: getattr(q, f) for f in _FIELDS}, separators=(",", ":")).encode()
        )
        .decode()
        .rstrip("=")
    )
    return f"q1.{body}.{_sig(secret, body.encode())}"


def verify(secret: bytes, quote_id: str, consumer_id: str, now: datetime) -> QuoteData:
    q = open_quote(secret, quote_id, consumer_id)
    check_fresh(q, now)
    return q


def open_quote(secret: bytes, quote_id: str, consumer_id: str) -> QuoteData:
    """The quote if it is genuine and this consumer's; its age is not checked (a replayed
    Pay must get its stored receipt even after the quote has expired)."""
    if len(quote_id) > 1000 or quote_id.count(".") != 2 or not quote_id.startswith("q1."):
        raise ValidationError("malformed quote id", reason="INVALID_QUOTE")
    _, body, sig = quote_id.split(".")
    # Bytes: compare_digest refuses str with non-ASCII characters.
    if not hmac.compare_digest(_sig(secret, body.encode()).encode(), sig.encode()):
        raise ValidationError("quote id is not valid", reason="INVALID_QUOTE")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        q = QuoteData(**json.loads(raw))
    except (ValueError, TypeError):
        raise ValidationError("malformed quote id", reason="INVALID_QUOTE") from None
    if q.consumer_id != consumer_id:
        raise ValidationError("this quote belongs to someone else", reason="INVALID_QUOTE")
    return q


def check_fresh(q: QuoteData, now: datetime) -> None:
    if now >= datetime.fromtimestamp(q.expires_at, UTC):
        raise PreconditionFailed(
            "the quote has expired; scan again for a fresh one", reason="QUOTE_EXPIRED"
        )
