"""Just enough magstripe reading for the cashier's display: masked number and brand.

The PSP does the real parsing, Luhn and expiry checks; the till only needs to show the
cashier *which* card was read without ever displaying, logging or storing the number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TRACK1 = re.compile(r"%[A-Z](\d{12,19})\^[^^]*\^(\d{4})")
_TRACK2 = re.compile(r";(\d{12,19})=(\d{4})")


@dataclass(frozen=True, slots=True)
class SwipeSummary:
    """What may be shown: at most the first 6 and last 4 digits."""

    masked: str
    brand: str
    last4: str


def _brand(pan: str) -> str:
    two, four = int(pan[:2]), int(pan[:4])
    six = int(pan[:6])
    if pan.startswith("4"):
        return "Visa"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "Mastercard"
    if two in (34, 37):
        return "Amex"
    if pan.startswith(("6011", "65")) or 644 <= int(pan[:3]) <= 649:
        return "Discover"
    if 3528 <= four <= 3589:
        return "JCB"
    if two in (36, 38) or 300 <= int(pan[:3]) <= 305:
        return "Diners"
    if pan.startswith("62"):
        return "UnionPay"
    if two in (50, 56, 57, 58) or 600000 <= six <= 699999:
        return "Maestro"
    return "Card"


def _luhn_ok(pan: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask(pan: str) -> str:
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def looks_like_swipe(text: str) -> bool:
    return text.startswith(("%", ";"))


def summarize(track_data: str) -> SwipeSummary | None:
    """The masked card from what the reader typed, or ``None`` when nothing readable."""
    match = _TRACK1.search(track_data) or _TRACK2.search(track_data)
    if match is None:
        return None
    pan = match.group(1)
    if not _luhn_ok(pan):
        return None
    return SwipeSummary(masked=mask(pan), brand=_brand(pan), last4=pan[-4:])
