"""The schema, as SQLAlchemy Core tables. Alembic migrations are generated from this
metadata and are the only way the schema changes (``alembic check`` in CI)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


merchants = Table(
    "merchants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("code", String(12), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("city", String(60), nullable=False),
    Column("country", String(2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("mcc", String(4), nullable=False),
    Column("discount_rate_bps", Integer, nullable=False),
    Column("event_seq", BigInteger, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
)

terminals = Table(
    "terminals",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), ForeignKey("merchants.id"), nullable=False, index=True),
    Column("label", String(40), nullable=False),
    Column("key_prefix", String(24), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

static_qrs = Table(
    "static_qrs",
    metadata,
    Column("token", String(32), primary_key=True),
    Column("merchant_id", String(40), ForeignKey("merchants.id"), nullable=False),
    Column("terminal_id", String(40), ForeignKey("terminals.id"), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("merchant_id", "terminal_id", name="uq_static_qrs_merchant_terminal"),
)

consumers = Table(
    "consumers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("display_name", String(100), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("kyc_tier", Integer, nullable=False),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("consumer_id", String(40), ForeignKey("consumers.id"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("type", String(20), nullable=False),
    Column("owner_id", String(40), nullable=False),
    Column("currency", String(3), nullable=False),
    # Cached balance on the account's normal side; always equal to the sum of its
    # postings (checked by tests and `scanpay admin ledger check`).
    Column("balance_minor", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("type", "owner_id", "currency", name="uq_accounts_type_owner_currency"),
)

journal_entries = Table(
    "journal_entries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("payment_id", String(40), nullable=True, index=True),
    Column("memo", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

postings = Table(
    "postings",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("entry_id", String(40), ForeignKey("journal_entries.id"), nullable=False, index=True),
    Column("debit_account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("credit_account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
)

payments = Table(
    "payments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), ForeignKey("merchants.id"), nullable=False),
    Column("terminal_id", String(40), nullable=True),
    Column("method", String(16), nullable=False),
    Column("status", String(20), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("fee_minor", BigInteger, nullable=False),
    Column("refunded_minor", BigInteger, nullable=False),
    Column("qr_token", String(32), nullable=True, unique=True),
    Column("payer_consumer_id", String(40), nullable=True, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("paid_at", UtcDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    # The whole aggregate (refunds, FX, payer) as JSON; the columns above are for
    # lookups and reports.
    Column("data", Text, nullable=False),
    Index("ix_payments_merchant_created", "merchant_id", "created_at"),
    Index("ix_payments_status_expires", "status", "expires_at"),
    Index("ix_payments_merchant_order", "merchant_id", "order_id"),
)

events = Table(
    "events",
    metadata,
    Column("merchant_id", String(40), ForeignKey("merchants.id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(20), nullable=False),
    Column("payment_id", String(40), nullable=False),
    Column("data", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("scope", String(80), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

daily_spend = Table(
    "daily_spend",
    metadata,
    Column("consumer_id", String(40), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("spent_minor", BigInteger, nullable=False),
)

wallet_activity = Table(
    "wallet_activity",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("consumer_id", String(40), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("merchant_name", String(100), nullable=False),
    Column("payment_id", String(40), nullable=True),
    Column("description", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_wallet_activity_consumer_id", "consumer_id", "id"),
)

fx_rates = Table(
    "fx_rates",
    metadata,
    Column("base", String(3), primary_key=True),
    Column("quote", String(3), primary_key=True),
    Column("rate", String(32), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# -- card rail ------------------------------------------------------------------------
# Never track data, CVV or a clear PAN: the vault's ciphertext, a keyed fingerprint, and
# at most the first 6 / last 4 digits.

card_payments = Table(
    "card_payments",
    metadata,
    Column("payment_id", String(40), primary_key=True),
    Column("merchant_id", String(40), ForeignKey("merchants.id"), nullable=False),
    Column("terminal_id", String(40), nullable=False),
    Column("action", String(12), nullable=False),  # sale | authorize
    Column("pan_ciphertext", LargeBinary, nullable=False),
    Column("pan_fingerprint", String(64), nullable=False, index=True),
    Column("pan_masked", String(24), nullable=False),
    Column("brand", String(16), nullable=False),
    # The original request, to capture or reverse it: MTI, STAN, transmission time.
    Column("mti", String(4), nullable=False),
    Column("stan", String(6), nullable=False),
    Column("transmitted_at", UtcDateTime, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    # sent -> approved | declined | lost; then captured / voided / settled
    Column("state", String(12), nullable=False),
    Column("response_code", String(2), nullable=False),
    Column("network_transaction_id", String(12), nullable=True, index=True),
    Column("capture_stan", String(6), nullable=True),
    Column("capture_transmitted_at", UtcDateTime, nullable=True),
    Column("captured_minor", BigInteger, nullable=True),
    # The capture's idempotency key, so a retry after a start-up recovery booked it gets
    # the payment back instead of PAYMENT_NOT_CAPTURABLE.
    Column("capture_idem_key", String(128), nullable=True),
    Column("capture_request_hash", String(64), nullable=True),
    # The network's batch id once booked; while a close is in flight, the close's id.
    Column("batch_id", String(32), nullable=True, index=True),
    Column("idem_scope", String(80), nullable=False),
    Column("idem_key", String(128), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("idem_scope", "idem_key", name="uq_card_payments_idem"),
)

card_refunds = Table(
    "card_refunds",
    metadata,
    Column("refund_id", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False, index=True),
    Column("merchant_id", String(40), nullable=False),
    Column("stan", String(6), nullable=False),
    Column("transmitted_at", UtcDateTime, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("state", String(12), nullable=False),
    Column("network_transaction_id", String(12), nullable=True, index=True),
    Column("batch_id", String(32), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    # The request, so that a retry or the start-up recovery re-sends the same refund.
    Column("idem_scope", String(80), nullable=True),
    Column("idem_key", String(128), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("reason", String(200), nullable=True),
    UniqueConstraint("idem_scope", "idem_key", name="uq_card_refunds_idem"),
)

# A batch close in flight: recorded with its trace and totals before the 0500 is sent, so a
# retry (or the start-up recovery) re-sends the same message and books the answer once.
card_batch_closes = Table(
    "card_batch_closes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), ForeignKey("merchants.id"), nullable=False, index=True),
    Column("stan", String(6), nullable=False),
    Column("transmitted_at", UtcDateTime, nullable=False),
    Column("sales_count", Integer, nullable=False),
    Column("sales_minor", BigInteger, nullable=False),
    Column("refunds_count", Integer, nullable=False),
    Column("refunds_minor", BigInteger, nullable=False),
    Column("state", String(12), nullable=False),  # sent -> booked
    Column("batch_id", String(32), nullable=True),
    Column("idem_scope", String(80), nullable=False),
    Column("idem_key", String(128), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("idem_scope", "idem_key", name="uq_card_batch_closes_idem"),
)

card_reversals = Table(
    "card_reversals",
    metadata,
    Column("key", String(120), primary_key=True),
    Column("mti", String(4), nullable=False),
    Column("processing_code", String(6), nullable=False),
    Column("stan", String(6), nullable=False),
    Column("transmitted_at", UtcDateTime, nullable=False),
    Column("merchant_id", String(40), nullable=False),
    Column("terminal_id", String(40), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reversal_stan", String(6), nullable=False),
    Column("reversal_transmitted_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

card_batches = Table(
    "card_batches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("merchant_id", String(40), ForeignKey("merchants.id"), nullable=False, index=True),
    Column("settlement_date", String(10), nullable=False),
    Column("count", Integer, nullable=False),
    Column("gross_minor", BigInteger, nullable=False),
    Column("interchange_minor", BigInteger, nullable=False),
    Column("scheme_fee_minor", BigInteger, nullable=False),
    Column("net_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("settlement_file", String(400), nullable=False),
    Column("closed_at", UtcDateTime, nullable=False),
)

# What the PSP booked per settlement row (the file's fees as received at batch close).
card_settlements = Table(
    "card_settlements",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("batch_id", String(32), nullable=False, index=True),
    Column("merchant_id", String(40), nullable=False),
    Column("network_transaction_id", String(12), nullable=False),
    Column("type", String(24), nullable=False),
    Column("payment_id", String(40), nullable=True),
    Column("gross_minor", BigInteger, nullable=False),
    Column("interchange_minor", BigInteger, nullable=False),
    Column("scheme_fee_minor", BigInteger, nullable=False),
    Column("net_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
)

card_disputes = Table(
    "card_disputes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("payment_id", String(40), nullable=False, index=True),
    Column("merchant_id", String(40), nullable=False),
    Column("network_transaction_id", String(12), nullable=False, unique=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason_code", String(4), nullable=False),
    Column(
        "status", String(20), nullable=False
    ),  # open | accepted | evidence_submitted | won | lost
    Column("evidence", Text, nullable=False),
    Column("batch_id", String(32), nullable=False),
    # The representment (0600) carrying the evidence: its trace, kept before it is sent.
    Column("represent_stan", String(6), nullable=True),
    Column("represent_transmitted_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
