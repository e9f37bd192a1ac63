from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psp_server.domain.money import CURRENCIES, Money, MoneyError


def test_exponents_follow_iso_4217() -> None:
    assert Money(500, "JPY").decimal_string() == "500"
    assert Money(1250, "EUR").decimal_string() == "12.50"
    assert Money(1250, "KWD").decimal_string() == "1.250"
    assert Money(-5, "EUR").decimal_string() == "-0.05"


def test_parse_what_people_type() -> None:
    assert Money.parse("12.5", "EUR") == Money(1250, "EUR")
    assert Money.parse(" 1,000 ", "JPY") == Money(1000, "JPY")
    assert Money.parse("0.125", "KWD") == Money(125, "KWD")


@pytest.mark.parametrize(
    ("text", "currency", "reason"),
    [
        ("12.345", "EUR", "INVALID_AMOUNT"),  # more decimals than EUR has
        ("1.5", "JPY", "INVALID_AMOUNT"),
        ("abc", "EUR", "INVALID_AMOUNT"),
        ("NaN", "EUR", "INVALID_AMOUNT"),
        ("Infinity", "EUR", "INVALID_AMOUNT"),
        ("1", "XXX", "UNKNOWN_CURRENCY"),
        ("1e20", "EUR", "AMOUNT_TOO_LARGE"),
    ],
)
def test_parse_rejects_bad_input(text: str, currency: str, reason: str) -> None:
    with pytest.raises(MoneyError) as exc:
        Money.parse(text, currency)
    assert exc.value.reason == reason


def test_no_floats_and_no_mixed_currencies() -> None:
    with pytest.raises(MoneyError):
        Money(1.5, "EUR")  # type: ignore[arg-type]
    with pytest.raises(MoneyError) as exc:
        _ = Money(1, "EUR") + Money(1, "USD")
    assert exc.value.reason == "CURRENCY_MISMATCH"


def test_format_for_people() -> None:
    assert Money(123456789, "EUR").format() == "1,234,567.89 EUR"
    assert Money(5000, "JPY").format() == "5,000 JPY"


def test_percent_rounds_half_up() -> None:
    assert Money(150, "EUR").percent_bps(100) == Money(2, "EUR")  # 1.5 -> 2
    assert Money(149, "EUR").percent_bps(100) == Money(1, "EUR")
    assert Money(-150, "EUR").percent_bps(100) == Money(-2, "EUR")


@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12).filter(
        lambda r: sum(r) > 0
    ),
)
def test_allocate_never_loses_a_cent(amount: int, ratios: list[int]) -> None:
    parts = Money(amount, "EUR").allocate(ratios)
    assert sum(p.amount_minor for p in parts) == amount
    assert len(parts) == len(ratios)


@given(st.sampled_from(sorted(CURRENCIES)), st.integers(min_value=-(10**13), max_value=10**13))
def test_decimal_string_round_trips(currency: str, amount: int) -> None:
    m = Money(amount, currency)
    assert Money.parse(m.decimal_string(), currency) == m
