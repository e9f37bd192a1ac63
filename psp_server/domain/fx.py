"""Currency conversion with exact rational arithmetic (no floats, no Decimal drift)."""

from __future__ import annotations

from fractions import Fraction

from psp_server.domain.errors import ValidationError
from psp_server.domain.money import Money, exponent

MAX_RATE_DIGITS = 24


def parse_rate(text: str) -> Fraction:
    t = text.strip()
    if not t or len(t) > MAX_RATE_DIGITS or t.count(".") > 1:
        raise ValidationError(f"not a rate: {text!r}", reason="INVALID_RATE")
    if not t.replace(".", "", 1).isdigit():
        raise ValidationError(f"not a rate: {text!r}", reason="INVALID_RATE")
    value = Fraction(t)
    if value <= 0:
        raise ValidationError("a rate must be positive", reason="INVALID_RATE")
    return value


def format_rate(rate: Fraction, digits: int = 8) -> str:
    """Decimal string rounded half up to ``digits`` places, trailing zeros removed."""
    scaled = rate * 10**digits
    n = int(scaled)
    if scaled - n >= Fraction(1, 2):
        n += 1
    units, frac = divmod(n, 10**digits)
    s = f"{units}.{frac:0{digits}d}".rstrip("0").rstrip(".")
    return s


def with_markup(rate: Fraction, markup_bps: int) -> Fraction:
    return rate * Fraction(10_000 + markup_bps, 10_000)


def convert(amount: Money, rate: Fraction, to_currency: str) -> Money:
    """Convert at ``rate`` (units of ``to_currency`` per unit of ``amount.currency``),
    rounding half up to the target currency's minor unit."""
    value = Fraction(amount.amount_minor, 10 ** exponent(amount.currency)) * rate
    scaled = value * 10 ** exponent(to_currency)
    n = int(scaled)
    if scaled - n >= Fraction(1, 2):
        n += 1
    return Money(n, to_currency)
