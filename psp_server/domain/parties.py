"""Merchants, their terminals, and consumers: plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from psp_server.domain.payments import Payment


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    code: str  # short public code printed in QR payloads
    name: str
    city: str
    country: str
    currency: str
    mcc: str
    discount_rate_bps: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Terminal:
    id: str
    merchant_id: str
    label: str
    key_prefix: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Consumer:
    id: str
    email: str
    display_name: str
    password_hash: str
    currency: str
    kyc_tier: int
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StaticQr:
    token: str
    merchant_id: str
    terminal_id: str | None


@dataclass(frozen=True, slots=True)
class Event:
    merchant_id: str
    seq: int
    type: str
    payment_id: str
    data: str  # the payment snapshot, JSON
    occurred_at: datetime
    # The payment as committed, when the event was made in this process (not stored; the
    # live stream encodes it without parsing ``data`` back).
    payment: Payment | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Activity:
    id: str
    consumer_id: str
    kind: str  # payment | refund | top_up
    amount_minor: int  # signed from the wallet's view
    currency: str
    merchant_name: str
    payment_id: str | None
    description: str
    created_at: datetime
