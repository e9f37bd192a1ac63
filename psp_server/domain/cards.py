"""Payment cards: what a magstripe reader types, and what we may know about the card.

A USB magstripe reader in keyboard-wedge mode "types" the tracks of ISO/IEC 7813:

* track 1 (format B): ``%B<PAN>^<SURNAME/GIVEN>^<YYMM><service code><discretionary>?``
* track 2:           ``;<PAN>=<YYMM><service code><discretionary>?``

each optionally followed by its LRC character, with or without a newline between the
tracks, and usually a trailing Enter. A track the reader could not decode comes out as
``%E?`` / ``;E?``.

:func:`read_swipe` turns that text into a :class:`Swipe` (or raises :class:`CardError` with a
stable reason); :func:`validate_swipe` applies the business checks (Luhn, brand, service code,
expiry); :func:`parse_swipe` does both. Also: Luhn, brand from BIN, masking (first 6 / last 4)
and the ISO 8583 response codes with their stable reasons.

Standard library only. A :class:`Swipe` holds the full PAN and track data *in memory* for the
authorization; its ``repr`` never shows them, and nothing here persists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# --- stable reasons -------------------------------------------------------------------------

CARD_READ_ERROR = "CARD_READ_ERROR"
CARD_EXPIRED = "CARD_EXPIRED"
CARD_LUHN_FAILED = "CARD_LUHN_FAILED"
CARD_TRACK_MISMATCH = "CARD_TRACK_MISMATCH"
CARD_UNSUPPORTED = "CARD_UNSUPPORTED"

PAN_MIN_LENGTH = 12
PAN_MAX_LENGTH = 19
MAX_SWIPE_CHARS = 1024  # three full tracks with separators are under 250


class CardError(ValueError):
    """A card that cannot be used. ``reason`` is stable; ``message`` is for the cashier.

    Messages never contain the PAN or track data.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"CardError({self.reason!r}, {self.message!r})"


# --- Luhn -----------------------------------------------------------------------------------


def _luhn_sum(digits: str, *, double_first: bool) -> int:
    total = 0
    double = double_first
    for ch in reversed(digits):
        d = ord(ch) - 48
        if double:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        double = not double
    return total


def luhn_ok(pan: str) -> bool:
    """True when ``pan`` is all digits and its last digit is a correct Luhn check digit."""
    if not pan.isascii() or not pan.isdigit() or len(pan) < 2:
        return False
    return _luhn_sum(pan, double_first=False) % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """The digit to append to ``partial`` so that the result passes :func:`luhn_ok`."""
    if not partial.isascii() or not partial.isdigit():
        raise ValueError("partial PAN must be digits")
    return str((10 - _luhn_sum(partial, double_first=True) % 10) % 10)


# --- brands ---------------------------------------------------------------------------------


class CardBrand(StrEnum):
    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    JCB = "jcb"
    UNIONPAY = "unionpay"
    MAESTRO = "maestro"
    DINERS = "diners"
    MIR = "mir"
    UNKNOWN = "unknown"


# (prefix length, low, high, brand): the PAN's first `length` digits within [low, high].
# Looked up longest prefix first, so a specific range beats a broad one.
_BIN_RANGES: tuple[tuple[int, int, int, CardBrand], ...] = (
    (6, 622126, 622925, CardBrand.UNIONPAY),
    (4, 2221, 2720, CardBrand.MASTERCARD),
    (4, 2200, 2204, CardBrand.MIR),
    (4, 3528, 3589, CardBrand.JCB),
    (4, 3095, 3095, CardBrand.DINERS),
    (4, 6011, 6011, CardBrand.DISCOVER),
    (4, 6304, 6304, CardBrand.MAESTRO),
    (4, 6759, 6759, CardBrand.MAESTRO),
    (4, 6761, 6763, CardBrand.MAESTRO),
    (3, 300, 305, CardBrand.DINERS),
    (3, 644, 649, CardBrand.DISCOVER),
    (2, 34, 34, CardBrand.AMEX),
    (2, 37, 37, CardBrand.AMEX),
    (2, 36, 36, CardBrand.DINERS),
    (2, 38, 39, CardBrand.DINERS),
    (2, 51, 55, CardBrand.MASTERCARD),
    (2, 50, 50, CardBrand.MAESTRO),
    (2, 56, 58, CardBrand.MAESTRO),
    (2, 62, 62, CardBrand.UNIONPAY),
    (2, 81, 81, CardBrand.UNIONPAY),
    (2, 65, 65, CardBrand.DISCOVER),
    (1, 4, 4, CardBrand.VISA),
)


def brand_of(pan: str) -> CardBrand:
    """The card brand from the BIN (leading digits); ``UNKNOWN`` when no range matches."""
    if not pan.isascii() or not pan.isdigit():
        return CardBrand.UNKNOWN
    for length, low, high, brand in _BIN_RANGES:
        if len(pan) >= length and low <= int(pan[:length]) <= high:
            return brand
    return CardBrand.UNKNOWN


# --- masking and names ----------------------------------------------------------------------


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest ``*``: ``411111******1111``.

    Short inputs never reveal more than 4 digits.
    """
    if len(pan) < PAN_MIN_LENGTH:
        return "*" * max(len(pan) - 4, 0) + pan[-4:]
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def cardholder_name(raw: str) -> str | None:
    """Track 1 ``SURNAME/GIVEN MIDDLE.TITLE`` -> ``"GIVEN MIDDLE SURNAME"``; ``None`` if blank."""
    text = " ".join(raw.split())
    if not text or text == "/":
        return None
    if "/" not in text:
        return text
    surname, _, given = text.partition("/")
    given = given.split(".", 1)[0]
    name = " ".join(f"{given.strip()} {surname.strip()}".split())
    return name or None


# --- expiry ---------------------------------------------------------------------------------


def _check_yymm(yymm: str) -> tuple[int, int]:
    if len(yymm) != 4 or not yymm.isascii() or not yymm.isdigit():
        raise ValueError("expiry must be YYMM")
    year, month = 2000 + int(yymm[:2]), int(yymm[2:])
    if not 1 <= month <= 12:
        raise ValueError("expiry month must be 01..12")
    return year, month


def is_expired(expiry_yymm: str, now: datetime) -> bool:
    """A card is valid through the last instant of its expiry month (in ``now``'s zone)."""
    year, month = _check_yymm(expiry_yymm)
    return (now.year, now.month) > (year, month)


# --- the swipe ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Swipe:
    """A card as read from the stripe. ``tracks`` holds the normalized tracks read, with
    sentinels and without LRC (``"%B...?"``, ``";...?"``); ``track2_equivalent`` is the
    ISO 8583 field 35 value (``PAN=YYMMSSS...``). Neither is ever shown by ``repr``/``str``.
    """

    pan: str
    name: str | None
    expiry_yymm: str
    service_code: str
    brand: CardBrand
    tracks: tuple[str, ...]
    track2_equivalent: str = field(default="")

    @property
    def masked(self) -> str:
        return mask_pan(self.pan)

    @property
    def last4(self) -> str:
        return self.pan[-4:]

    @property
    def bin6(self) -> str:
        return self.pan[:6]

    @property
    def luhn_ok(self) -> bool:
        return luhn_ok(self.pan)

    @property
    def track_numbers(self) -> tuple[str, ...]:
        """Which tracks were read: ``("1", "2")``, ``("2",)``..."""
        return tuple("1" if t.startswith("%") else "2" for t in self.tracks)

    @property
    def chip_card(self) -> bool:
        """Service code 2xx/6xx: the card has a chip (a swipe is then a fallback)."""
        return self.service_code[:1] in ("2", "6")

    def is_expired(self, now: datetime) -> bool:
        return is_expired(self.expiry_yymm, now)

    def __repr__(self) -> str:
        return (
            f"Swipe(pan={self.masked!r}, brand={self.brand.value!r}, "
            f"expiry_yymm={self.expiry_yymm!r}, service_code={self.service_code!r}, "
            f"tracks={self.track_numbers!r})"
        )

    __str__ = __repr__


# A whole swipe: optional track 1, optional track 2, optional track 3 (``+`` or a second
# ``;``), each ``<sentinel><body>?`` plus an optional LRC character, separated by anything
# blank. The LRC can itself be ``;`` or ``%``; the regex backtracks when that guess fails.
_SWIPE_RE = re.compile(
    r"""\s*
    (?: % (?P<t1>[^?\r\n]*) \? (?P<l1>\S)? )? \s*
    (?: ; (?P<t2>[^?\r\n]*) \? (?P<l2>\S)? )? \s*
    (?: [+;] [^?\r\n]* \? \S? )? \s*""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Track:
    number: str
    pan: str
    name: str | None
    expiry_yymm: str
    service_code: str
    discretionary: str
    normalized: str


class _Unusable(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _lrc1(text: str) -> str | None:
    """Track 1 LRC: XOR of the 6-bit codes (char - 0x20) from ``%`` through ``?``."""
    acc = 0
    for ch in text:
        code = ord(ch) - 0x20
        if not 0 <= code < 0x40:
            return None
        acc ^= code
    return chr(acc + 0x20)


def _lrc2(text: str) -> str | None:
    """Track 2 LRC: XOR of the 4-bit codes (char - 0x30) from ``;`` through ``?``."""
    acc = 0
    for ch in text:
        code = ord(ch) - 0x30
        if not 0 <= code < 0x10:
            return None
        acc ^= code
    return chr(acc + 0x30)


def _read_pan(raw: str) -> str:
    pan = raw.replace(" ", "")
    if not (pan.isascii() and pan.isdigit() and PAN_MIN_LENGTH <= len(pan) <= PAN_MAX_LENGTH):
        raise _Unusable(CARD_READ_ERROR, "the card number could not be read; swipe again")
    return pan


def _read_expiry_and_service(rest: str) -> tuple[str, str, str]:
    head = rest[:7]
    if len(head) != 7 or not head.isascii() or not head.isdigit():
        raise _Unusable(CARD_READ_ERROR, "expiry or service code unreadable; swipe again")
    try:
        _check_yymm(head[:4])
    except ValueError:
        raise _Unusable(CARD_READ_ERROR, "expiry date unreadable; swipe again") from None
    return head[:4], head[4:7], rest[7:]


def _parse_track1(body: str, lrc: str | None) -> _Track:
    body = body.upper()  # track 1 has no lower case; a reader under Caps Lock types some
    if lrc is not None:
        expected = _lrc1("%" + body + "?")
        if expected is not None and lrc.upper() != expected:
            raise _Unusable(CARD_READ_ERROR, "track 1 check character wrong; swipe again")
    if body[:1] != "B":
        raise _Unusable(CARD_UNSUPPORTED, "not a payment card (track 1 is not format B)")
    parts = body[1:].split("^", 2)
    if len(parts) != 3:
        raise _Unusable(CARD_READ_ERROR, "track 1 unreadable; swipe again")
    pan = _read_pan(parts[0])
    expiry, service, disc = _read_expiry_and_service(parts[2])
    normalized = f"%B{pan}^{parts[1]}^{parts[2]}?"
    return _Track("1", pan, cardholder_name(parts[1]), expiry, service, disc, normalized)


def _parse_track2(body: str, lrc: str | None) -> _Track:
    compact = body.replace(" ", "")
    if lrc is not None:
        expected = _lrc2(";" + compact + "?")
        if expected is not None and lrc != expected:
            raise _Unusable(CARD_READ_ERROR, "track 2 check character wrong; swipe again")
    sep = re.search(r"[=Dd]", compact)
    if sep is None:
        raise _Unusable(CARD_READ_ERROR, "track 2 unreadable; swipe again")
    pan = _read_pan(compact[: sep.start()])
    rest = compact[sep.end() :]
    expiry, service, disc = _read_expiry_and_service(rest)
    if not disc.isascii() or not all("0" <= ch <= "?" for ch in disc):
        raise _Unusable(CARD_READ_ERROR, "track 2 unreadable; swipe again")
    return _Track("2", pan, None, expiry, service, disc, f";{pan}={rest}?")


def _failed(body: str) -> bool:
    return body.strip().upper() == "E"


def read_swipe(data: str) -> Swipe:
    """Parse what the reader typed. Raises :class:`CardError` for a bad read.

    Only *reading* is checked here (structure, LRC when present, tracks agreeing); see
    :func:`validate_swipe` for Luhn, brand, service code and expiry.
    """
    if len(data) > MAX_SWIPE_CHARS:
        raise CardError(CARD_READ_ERROR, "too much input for a card swipe; swipe again")
    m = _SWIPE_RE.fullmatch(data)
    if m is None or (m["t1"] is None and m["t2"] is None):
        raise CardError(CARD_READ_ERROR, "no card data read; swipe again")
    tracks: list[_Track] = []
    problems: list[_Unusable] = []
    for number, body, lrc in (("1", m["t1"], m["l1"]), ("2", m["t2"], m["l2"])):
        if body is None or _failed(body):
            continue
        try:
            parse = _parse_track1 if number == "1" else _parse_track2
            tracks.append(parse(body, lrc))
        except _Unusable as exc:
            problems.append(exc)
    if not tracks:
        if any(p.reason == CARD_UNSUPPORTED for p in problems):
            raise CardError(CARD_UNSUPPORTED, "this card cannot be used for payments")
        raise CardError(CARD_READ_ERROR, "the card could not be read; swipe again")
    if len(tracks) == 2:
        t1, t2 = tracks
        if t1.pan != t2.pan:
            raise CardError(CARD_TRACK_MISMATCH, "the card's tracks disagree; swipe again")
        if (t1.expiry_yymm, t1.service_code) != (t2.expiry_yymm, t2.service_code):
            raise CardError(CARD_TRACK_MISMATCH, "the card's tracks disagree; swipe again")
    first = tracks[0]
    t2_read = next((t for t in tracks if t.number == "2"), None)
    if t2_read is not None:
        equivalent = t2_read.normalized[1:-1]
    else:
        digits = "".join(ch for ch in first.discretionary if ch.isdigit())
        equivalent = f"{first.pan}={first.expiry_yymm}{first.service_code}{digits}"[:37]
    return Swipe(
        pan=first.pan,
        name=next((t.name for t in tracks if t.number == "1"), None),
        expiry_yymm=first.expiry_yymm,
        service_code=first.service_code,
        brand=brand_of(first.pan),
        tracks=tuple(t.normalized for t in tracks),
        track2_equivalent=equivalent,
    )


def validate_swipe(
    swipe: Swipe, now: datetime, *, accepted: frozenset[CardBrand] | None = None
) -> Swipe:
    """Business checks on a read card, in order: Luhn, brand, service code, expiry.

    ``accepted`` limits the brands (default: every known brand). Returns ``swipe``.
    """
    if not swipe.luhn_ok:
        raise CardError(CARD_LUHN_FAILED, "the card number is not valid (check digit)")
    if swipe.brand is CardBrand.UNKNOWN or (accepted is not None and swipe.brand not in accepted):
        raise CardError(CARD_UNSUPPORTED, "this card brand is not accepted")
    if swipe.service_code[0] not in "12569":
        raise CardError(CARD_UNSUPPORTED, "this card is restricted to private use")
    if swipe.service_code[2] == "3":
        raise CardError(CARD_UNSUPPORTED, "this card is valid at ATMs only")
    if swipe.is_expired(now):
        raise CardError(CARD_EXPIRED, "card expired")
    return swipe


def parse_swipe(data: str, now: datetime, *, accepted: frozenset[CardBrand] | None = None) -> Swipe:
    """:func:`read_swipe` then :func:`validate_swipe`."""
    return validate_swipe(read_swipe(data), now, accepted=accepted)


def format_track1(
    pan: str, name: str, expiry_yymm: str, service_code: str, discretionary: str = ""
) -> str:
    """Build a track 1 string (``%B...?``): for tests, demos and the simulator."""
    return f"%B{pan}^{name}^{expiry_yymm}{service_code}{discretionary}?"


def format_track2(pan: str, expiry_yymm: str, service_code: str, discretionary: str = "") -> str:
    """Build a track 2 string (``;...=...?``)."""
    return f";{pan}={expiry_yymm}{service_code}{discretionary}?"


def track_lrc(track: str) -> str:
    """The LRC character for a formatted track (``%...?`` or ``;...?``)."""
    lrc = _lrc1(track) if track.startswith("%") else _lrc2(track)
    if lrc is None:
        raise ValueError("track holds characters outside its character set")
    return lrc


# --- ISO 8583 response codes (field 39) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseCode:
    code: str
    reason: str
    text: str

    @property
    def approved(self) -> bool:
        return self.code == "00"


_RESPONSE_CODES = {
    rc.code: rc
    for rc in (
        ResponseCode("00", "APPROVED", "approved"),
        ResponseCode("05", "CARD_DECLINED", "do not honor"),
        ResponseCode("12", "CARD_INVALID_TRANSACTION", "invalid transaction"),
        ResponseCode("13", "CARD_INVALID_AMOUNT", "invalid amount"),
        ResponseCode("14", "CARD_INVALID_NUMBER", "invalid card number"),
        ResponseCode("15", "CARD_NO_SUCH_ISSUER", "no such issuer"),
        ResponseCode("25", "CARD_ORIGINAL_NOT_FOUND", "unable to locate original transaction"),
        ResponseCode("30", "CARD_NETWORK_FORMAT_ERROR", "format error"),
        ResponseCode("41", "CARD_LOST", "lost card, pick up"),
        ResponseCode("43", "CARD_STOLEN", "stolen card, pick up"),
        ResponseCode("51", "CARD_INSUFFICIENT_FUNDS", "insufficient funds"),
        ResponseCode("54", CARD_EXPIRED, "expired card"),
        ResponseCode("91", "CARD_ISSUER_UNAVAILABLE", "issuer unavailable"),
        ResponseCode("94", "CARD_DUPLICATE_TRANSMISSION", "duplicate transmission"),
        ResponseCode("95", "CARD_BATCH_OUT_OF_BALANCE", "reconcile error, totals differ"),
        ResponseCode("96", "CARD_NETWORK_ERROR", "system malfunction"),
    )
}


def response_code(code: str) -> ResponseCode:
    """The meaning of an ISO 8583 field 39 value; unknown codes decline as ``CARD_DECLINED``."""
    return _RESPONSE_CODES.get(code) or ResponseCode(code, "CARD_DECLINED", f"declined ({code})")
