"""Money: integer minor units of an ISO 4217 currency. The shared kernel of all three apps.

No floats anywhere. ``Decimal`` appears only in :meth:`Money.parse` and
:meth:`Money.format`, at the edge where people type and read amounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# alpha code -> (numeric code, exponent). The currencies a shop pilot meets; add as needed.
CURRENCIES: dict[str, tuple[str, int]] = {
    "AED": ("784", 2),
    "ARS": ("032", 2),
    "AUD": ("036", 2),
    "BHD": ("048", 3),
    "BRL": ("986", 2),
    "CAD": ("124", 2),
    "CHF": ("756", 2),
    "CLP": ("152", 0),
    "CNY": ("156", 2),
    "COP": ("170", 2),
    "CZK": ("203", 2),
    "DKK": ("208", 2),
    "EUR": ("978", 2),
    "GBP": ("826", 2),
    "HKD": ("344", 2),
    "HUF": ("348", 2),
    "IDR": ("360", 2),
    "ILS": ("376", 2),
    "INR": ("356", 2),
    "ISK": ("352", 0),
    "JOD": ("400", 3),
    "JPY": ("392", 0),
    "KES": ("404", 2),
    "KRW": ("410", 0),
    "KWD": ("414", 3),
    "MXN": ("484", 2),
    "MYR": ("458", 2),
    "NGN": ("566", 2),
    "NOK": ("578", 2),
    "NZD": ("554", 2),
    "OMR": ("512", 3),
    "PHP": ("608", 2),
    "PLN": ("985", 2),
    "RON": ("946", 2),
    "SAR": ("682", 2),
    "SEK": ("752", 2),
    "SGD": ("702", 2),
    "THB": ("764", 2),
    "TND": ("788", 3),
    "TRY": ("949", 2),
    "TWD": ("901", 2),
    "USD": ("840", 2),
    "VND": ("704", 0),
    "ZAR": ("710", 2),
}
_BY_NUMERIC = {num: alpha for alpha, (num, _) in CURRENCIES.items()}

# No single payment or balance in this system may reach this many minor units
# (about 10^15, well inside int64 and far above any real shop sale).
MAX_AMOUNT_MINOR = 10**15


class MoneyError(ValueError):
    """A malformed amount or currency. ``reason`` is the stable error reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def exponent(currency: str) -> int:
    try:
        return CURRENCIES[currency][1]
    except KeyError:
        raise MoneyError("UNKNOWN_CURRENCY", f"unknown currency {currency!r}") from None


def numeric_code(currency: str) -> str:
    try:
        return CURRENCIES[currency][0]
    except KeyError:
        raise MoneyError("UNKNOWN_CURRENCY", f"unknown currency {currency!r}") from None


def currency_from_numeric(code: str) -> str | None:
    return _BY_NUMERIC.get(code)


def is_currency(code: str) -> bool:
    return code in CURRENCIES


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount_minor) is not int:
            raise MoneyError("INVALID_AMOUNT", "amount_minor must be an integer")
        if self.currency not in CURRENCIES:
            raise MoneyError("UNKNOWN_CURRENCY", f"unknown currency {self.currency!r}")
        if abs(self.amount_minor) >= MAX_AMOUNT_MINOR:
            raise MoneyError("AMOUNT_TOO_LARGE", "amount is out of range")

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Parse what a person typed (``"12.50"``, ``"1,000"``) in major units.

        More decimals than the currency has is an error, never a silent rounding.
        """
        exp = exponent(currency)
        cleaned = text.strip().replace(",", "").replace("_", "").replace(" ", "")
        try:
            value = Decimal(cleaned)
        except InvalidOperation:
            raise MoneyError("INVALID_AMOUNT", f"not an amount: {text!r}") from None
        if not value.is_finite():
            raise MoneyError("INVALID_AMOUNT", f"not an amount: {text!r}")
        scaled = value.scaleb(exp)
        if scaled != scaled.to_integral_value():
            raise MoneyError("INVALID_AMOUNT", f"{currency} has {exp} decimal places, got {text!r}")
        return cls(int(scaled), currency)

    @property
    def exponent(self) -> int:
        return exponent(self.currency)

    def to_decimal(self) -> Decimal:
        return Decimal(self.amount_minor).scaleb(-self.exponent)

    def decimal_string(self) -> str:
        """``"12.50"`` for 1250 EUR, ``"500"`` for 500 JPY, ``"1.250"`` for 1250 KWD."""
        exp = self.exponent
        sign = "-" if self.amount_minor < 0 else ""
        units, frac = divmod(abs(self.amount_minor), 10**exp)
        return f"{sign}{units}.{frac:0{exp}d}" if exp else f"{sign}{units}"

    def format(self) -> str:
        """Human display: ``"12.50 EUR"``, with thousands separators."""
        exp = self.exponent
        sign = "-" if self.amount_minor < 0 else ""
        units, frac = divmod(abs(self.amount_minor), 10**exp)
        body = f"{units:,}" + (f".{frac:0{exp}d}" if exp else "")
        return f"{sign}{body} {self.currency}"

    def _check(self, other: Money) -> None:
        if self.currency != other.currency:
            raise MoneyError(
                "CURRENCY_MISMATCH", f"cannot combine {self.currency} and {other.currency}"
            )

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._check(other)
        return self.amount_minor <= other.amount_minor

    def __gt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount_minor > other.amount_minor

    def __ge__(self, other: Money) -> bool:
        self._check(other)
        return self.amount_minor >= other.amount_minor

    @property
    def is_positive(self) -> bool:
        return self.amount_minor > 0

    def percent_bps(self, bps: int) -> Money:
        """``bps`` basis points of this amount, rounded half up (away from zero)."""
        n = abs(self.amount_minor) * bps
        q, r = divmod(n, 10_000)
        if r * 2 >= 10_000:
            q += 1
        return Money(q if self.amount_minor >= 0 else -q, self.currency)

    def allocate(self, ratios: list[int]) -> list[Money]:
        """Split into parts proportional to ``ratios`` without losing a minor unit."""
        total = sum(ratios)
        if total <= 0 or any(r < 0 for r in ratios):
            raise MoneyError("INVALID_AMOUNT", "ratios must be non-negative with a positive sum")
        parts = [self.amount_minor * r // total for r in ratios]
        remainder = self.amount_minor - sum(parts)
        for i in range(abs(remainder)):
            parts[i % len(parts)] += 1 if remainder > 0 else -1
        return [Money(p, self.currency) for p in parts]

    def __str__(self) -> str:
        return self.format()
