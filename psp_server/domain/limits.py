"""KYC tiers: what a consumer may pay per payment and per day, in major units of the
wallet's currency (scaled by the currency's exponent)."""

from __future__ import annotations

from dataclasses import dataclass

from psp_server.domain.errors import LimitExceeded, ValidationError
from psp_server.domain.money import Money, exponent


@dataclass(frozen=True, slots=True)
class Tier:
    level: int
    name: str
    per_payment_major: int
    per_day_major: int
    max_balance_major: int


# Major units of the wallet currency. For JPY/KRW-like currencies (exponent 0) the
# numbers are scaled up so that a tier means roughly the same purchasing power.
TIERS: dict[int, Tier] = {
    0: Tier(0, "unverified", 50, 150, 250),
    1: Tier(1, "basic", 500, 1_500, 5_000),
    2: Tier(2, "verified", 5_000, 20_000, 100_000),
    3: Tier(3, "business", 50_000, 250_000, 1_000_000),
}


def tier(level: int) -> Tier:
    try:
        return TIERS[level]
    except KeyError:
        raise ValidationError(f"unknown KYC tier {level}", reason="INVALID_KYC_TIER") from None


def _scale(major: int, currency: str) -> Money:
    exp = exponent(currency)
    factor = 100 if exp == 0 else 1  # 50 EUR ~ 5,000 JPY
    return Money(major * factor * 10**exp, currency)


def per_payment_limit(level: int, currency: str) -> Money:
    return _scale(tier(level).per_payment_major, currency)


def daily_limit(level: int, currency: str) -> Money:
    return _scale(tier(level).per_day_major, currency)


def max_balance(level: int, currency: str) -> Money:
    return _scale(tier(level).max_balance_major, currency)


def check_payment(level: int, amount: Money, spent_today: Money) -> None:
    per_payment = per_payment_limit(level, amount.currency)
    if amount > per_payment:
        raise LimitExceeded(
            f"{amount} is over your per-payment limit of {per_payment}",
            reason="LIMIT_EXCEEDED",
            limit="per_payment",
            limit_minor=str(per_payment.amount_minor),
        )
    per_day = daily_limit(level, amount.currency)
    if spent_today + amount > per_day:
        raise LimitExceeded(
            f"this payment would take you over your daily limit of {per_day}",
            reason="LIMIT_EXCEEDED",
            limit="per_day",
            limit_minor=str(per_day.amount_minor),
        )
