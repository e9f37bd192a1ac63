"""EMVCo Merchant-Presented Mode (MPM) QR codec. Standard library only.

Two jobs:

* :func:`encode_scanpay` builds *our* payload. It is designed for QR **alphanumeric mode**
  (``0-9 A-Z space $ % * + - . / :``) and at most 154 characters, which fits QR version 6 at
  error-correction level M -- small enough to draw with half-block characters in an 80x24
  terminal. Required fields are placed first; the merchant name and city are transliterated
  into the alphanumeric charset and cut only when needed; the optional additional-data
  fields (bill number, terminal label) are added only while the total still fits.
* :func:`parse` reads *any* EMV MPM payload (tags in any order, nested templates, unknown
  tags kept in order, format indicator 01 or 02, tag 01 absent, multi-byte UTF-8 text)
  and UPI ``upi://pay?...`` links, checks the CRC, and names the network the code belongs
  to, so the wallet can say plainly when a code is not ours.

TLV layout: ``ID`` (2 digits) ``LEN`` (2 digits, counting *characters*) ``VALUE``. The CRC
(tag ``63``) is CRC-16/CCITT-FALSE over the UTF-8 bytes of everything up to and including
``6304``, written as 4 upper-case hex digits.

Every failure is a :class:`QrError` with a stable ``reason`` (see :data:`REASONS`).
"""

from __future__ import annotations

import binascii
import functools
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal
from urllib.parse import parse_qsl, urlsplit

from psp_server.domain.money import (
    CURRENCIES,
    Money,
    MoneyError,
    currency_from_numeric,
    numeric_code,
)

__all__ = [
    "ALNUM_CHARSET",
    "MAX_INPUT_LENGTH",
    "MAX_PAYLOAD_LENGTH",
    "REASONS",
    "SCANPAY_GUID",
    "SCHEME_NAMES",
    "ParsedQr",
    "QrError",
    "Tlv",
    "crc16_ccitt_false",
    "encode_scanpay",
    "inspect",
    "is_qr_alnum",
    "names_match",
    "parse",
    "to_qr_alnum",
]

# --------------------------------------------------------------------------- constants

#: The 45 characters of QR alphanumeric mode.
ALNUM_CHARSET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_ALNUM_SET: Final = frozenset(ALNUM_CHARSET)

#: Our payloads stay within this length: QR version 6 at level M holds 154 alphanumeric chars.
MAX_PAYLOAD_LENGTH: Final = 154
#: :func:`parse` refuses longer input (after stripping surrounding whitespace).
MAX_INPUT_LENGTH: Final = 512

#: The globally unique identifier in our merchant account template (tag 26, subtag 00).
SCANPAY_GUID: Final = "SCANPAY"
_SCANPAY_TAG: Final = "26"

#: EMV limits for the merchant name (59) and city (60), and the additional-data subfields.
NAME_MAX: Final = 25
CITY_MAX: Final = 15
ADDITIONAL_SUBFIELD_MAX: Final = 25
#: Used for a name or city that has no character left after transliteration (e.g. only Thai
#: or Chinese script). EMV makes both fields mandatory; PayNow uses the same filler.
FALLBACK_TEXT: Final = "NA"

REASONS: Final = (
    "QR_MALFORMED",  # broken TLV: non-digit tag/length, bad length, truncated value, ...
    "QR_CRC_MISSING",  # no tag 63, or a payload ending in "6304" with no checksum
    "QR_CRC_MISMATCH",  # the checksum does not match the content (damaged or altered)
    "QR_TOO_LONG",  # input over 512 characters, or our payload cannot fit the budget
    "QR_UNSUPPORTED_FORMAT",  # not an EMV MPM code / UPI link, or format indicator not 01/02
    "QR_BAD_AMOUNT",  # tag 54 / am= is not a plain decimal that fits the currency
    "QR_INVALID_FIELD",  # encode_scanpay got an input it cannot put in a payload
)

Scheme = Literal[
    "SCANPAY", "PIX", "PROMPTPAY", "PAYNOW", "DUITNOW", "QRIS", "VIETQR", "UPI", "EMVCO"
]

SCHEME_NAMES: Final[dict[str, str]] = {
    "SCANPAY": "ScanPay",
    "PIX": "Pix (Brazil)",
    "PROMPTPAY": "PromptPay (Thailand)",
    "PAYNOW": "PayNow (Singapore)",
    "DUITNOW": "DuitNow QR (Malaysia)",
    "QRIS": "QRIS (Indonesia)",
    "VIETQR": "VietQR / NAPAS (Vietnam)",
    "UPI": "UPI (India)",
    "EMVCO": "EMV QR (other network)",
}

# Top-level tags whose value is itself a TLV list: merchant account information templates,
# additional data, merchant information in an alternate language, unreserved templates.
_TEMPLATE_TAGS: Final = frozenset(
    [f"{t:02d}" for t in range(26, 52)] + ["62", "64"] + [f"{t:02d}" for t in range(80, 100)]
)
_MERCHANT_ACCOUNT_TAGS: Final = frozenset(f"{t:02d}" for t in range(26, 52))

_DIGITS2 = re.compile(r"[0-9]{2}")
_EMV_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]*))?|\.([0-9]+)")
_MERCHANT_CODE = re.compile(r"[0-9A-Z]{1,10}")
_BASE32 = re.compile(r"[A-Z2-7]+")
_MCC = re.compile(r"[0-9]{4}")
_COUNTRY = re.compile(r"[A-Z]{2}")


class QrError(ValueError):
    """A QR payload that cannot be read or built. ``reason`` is a stable UPPER_SNAKE code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- CRC


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0.

    ``crc16_ccitt_false(b"123456789") == 0x29B1``.
    """
    # binascii's CRC-CCITT is this polynomial, unreflected, from the initial value given.
    return binascii.crc_hqx(data, 0xFFFF)


def _crc_hex(text: str) -> str:
    return f"{crc16_ccitt_false(text.encode('utf-8')):04X}"


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Tlv:
    """One data object. ``children`` holds the sub-objects of a template (26-51, 62, 64,
    80-99) when its value parses as TLV, else ``None``. For a UPI link, each query
    parameter is a ``Tlv`` whose ``tag`` is the parameter name."""

    tag: str
    value: str
    children: tuple[Tlv, ...] | None = None

    def child(self, tag: str) -> Tlv | None:
        for sub in self.children or ():
            if sub.tag == tag:
                return sub
        return None

    def child_value(self, tag: str) -> str | None:
        sub = self.child(tag)
        return None if sub is None else sub.value


@dataclass(frozen=True)
class ParsedQr:
    raw: str
    scheme: Scheme
    scheme_name: str
    initiation: Literal["static", "dynamic"] | None
    amount_text: str | None
    currency_numeric: str | None
    currency: str | None
    merchant_name: str | None
    merchant_city: str | None
    country: str | None
    mcc: str | None
    bill_number: str | None
    terminal_label: str | None
    fields: tuple[Tlv, ...]
    scanpay_merchant_code: str | None
    scanpay_token: str | None

    @property
    def payable(self) -> bool:
        """True for our own codes: the token is resolved (and the QR marked paid) server-side."""
        return self.scheme == "SCANPAY" and bool(self.scanpay_token)

    @property
    def notice(self) -> str | None:
        """A plain sentence for the consumer when the code belongs to another network."""
        if self.scheme == "SCANPAY":
            return None
        if self.scheme == "EMVCO":
            return (
                "This is a payment QR code of another network (not ScanPay); "
                "it cannot be paid with this wallet."
            )
        return (
            f"This is a {self.scheme_name} payment code. It belongs to another payment "
            "network and cannot be paid with ScanPay."
        )

    def field(self, tag: str) -> Tlv | None:
        """The first top-level field with this tag."""
        for tlv in self.fields:
            if tlv.tag == tag:
                return tlv
        return None

    def amount(self) -> Money | None:
        """The amount as :class:`Money`, or ``None`` without an amount or a known currency.

        Raises ``QrError("QR_BAD_AMOUNT")`` when the text is not a plain decimal
        (``"12.50"``, ``"12"``) or has more decimals than the currency allows.
        """
        if self.amount_text is None or self.currency is None:
            return None
        return _parse_amount(self.amount_text, self.currency)


def _parse_amount(text: str, currency: str) -> Money:
    match = _EMV_AMOUNT.fullmatch(text)
    if match is None:
        raise QrError("QR_BAD_AMOUNT", f"the amount {text!r} is not a plain decimal number")
    value = Decimal(text if not text.endswith(".") else text[:-1])
    exp = CURRENCIES[currency][1]
    scaled = value.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise QrError(
            "QR_BAD_AMOUNT", f"the amount {text!r} has more decimals than {currency} allows ({exp})"
        )
    try:
        return Money(int(scaled), currency)
    except MoneyError as exc:
        raise QrError("QR_BAD_AMOUNT", f"the amount {text!r} is out of range") from exc


# --------------------------------------------------------------------------- TLV parsing


class _TlvError(Exception):
    pass


def _parse_tlvs(text: str, *, nested: bool) -> list[tuple[int, Tlv]]:
    """Split ``text`` into ``(offset, Tlv)``; templates get children when ``nested``."""
    out: list[tuple[int, Tlv]] = []
    pos = 0
    end = len(text)
    while pos < end:
        if end - pos < 4:
            raise _TlvError(f"truncated data object at position {pos}: {text[pos:]!r}")
        tag, length_text = text[pos : pos + 2], text[pos + 2 : pos + 4]
        if not _DIGITS2.fullmatch(tag):
            raise _TlvError(f"tag at position {pos} is not two digits: {tag!r}")
        if not _DIGITS2.fullmatch(length_text):
            raise _TlvError(f"length of tag {tag} at position {pos} is not two digits")
        length = int(length_text)
        if length == 0:
            raise _TlvError(f"tag {tag} at position {pos} has length 00")
        start = pos + 4
        if start + length > end:
            raise _TlvError(
                f"tag {tag} at position {pos} says {length} characters but only "
                f"{end - start} remain (truncated value)"
            )
        value = text[start : start + length]
        children = _try_children(value) if nested and tag in _TEMPLATE_TAGS else None
        out.append((pos, Tlv(tag, value, children)))
        pos = start + length
    return out


def _try_children(value: str) -> tuple[Tlv, ...] | None:
    # Templates are read leniently: a network's odd sub-structure must not make the whole
    # (CRC-valid) code unreadable; the raw value is kept either way.
    try:
        return tuple(tlv for _, tlv in _parse_tlvs(value, nested=False))
    except _TlvError:
        return None


# --------------------------------------------------------------------------- schemes


def _scheme_of_guid(guid: str) -> Scheme | None:
    g = guid.strip().upper()
    if g == SCANPAY_GUID:
        return "SCANPAY"
    if g == "BR.GOV.BCB.PIX":
        return "PIX"
    if g.startswith("A000000677"):  # Thai QR: 010111 transfer, 010112/13 bill pay, 010114 ...
        return "PROMPTPAY"
    if g == "SG.PAYNOW":
        return "PAYNOW"
    if g.startswith("A000000615"):  # PayNet Malaysia AID, DuitNow QR: A0000006150001
        return "DUITNOW"
    if g.startswith("ID."):
        # ID.CO.QRIS.WWW (the national template, tag 51) and the issuers' Indonesian
        # reverse-domain ids (ID.CO.SHOPEE.WWW, ID.DANA.WWW, ...): all QRIS.
        return "QRIS"
    if g.startswith("A000000727"):  # NAPAS
        return "VIETQR"
    if g.startswith("A000000524"):  # NPCI (UPI inside BharatQR)
        return "UPI"
    return None


def _detect_scheme(fields: list[Tlv]) -> tuple[Scheme, Tlv | None]:
    """The network named by the merchant-account templates; ours wins, else the first known."""
    found: Scheme | None = None
    for tlv in fields:
        if tlv.tag not in _MERCHANT_ACCOUNT_TAGS or tlv.children is None:
            continue
        guid = tlv.child_value("00")
        if guid is None:
            continue
        scheme = _scheme_of_guid(guid)
        if scheme == "SCANPAY":
            return "SCANPAY", tlv
        if found is None and scheme is not None:
            found = scheme
    return (found or "EMVCO"), None


# --------------------------------------------------------------------------- parse


def parse(payload: str) -> ParsedQr:
    """Parse an EMV MPM payload (any network) or a ``upi://pay?...`` link.

    Surrounding whitespace is ignored. Raises :class:`QrError` (see :data:`REASONS`).
    """
    raw = payload.strip()
    if len(raw) > MAX_INPUT_LENGTH:
        raise QrError(
            "QR_TOO_LONG",
            f"the code has {len(raw)} characters; at most {MAX_INPUT_LENGTH} are read",
        )
    if not raw:
        raise QrError("QR_MALFORMED", "the code is empty")
    if raw[:6].lower() == "upi://":
        return _parse_upi(raw)
    if not raw.startswith("00"):
        raise QrError(
            "QR_UNSUPPORTED_FORMAT",
            "not an EMV merchant-presented payment code (it must start with tag 00) nor a UPI link",
        )
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise QrError(
            "QR_MALFORMED", "the code contains characters that are not valid text"
        ) from None

    try:
        located = _parse_tlvs(raw, nested=True)
    except _TlvError as exc:
        body = raw[:-4] if raw.endswith("6304") else None
        if body is not None and _parses(body):
            raise QrError(
                "QR_CRC_MISSING", "the code ends in 6304 without the 4-digit checksum"
            ) from None
        raise QrError("QR_MALFORMED", f"broken data object: {exc}") from None

    fields = [tlv for _, tlv in located]
    fmt = fields[0]
    if fmt.value not in ("01", "02"):
        raise QrError(
            "QR_UNSUPPORTED_FORMAT",
            f"payload format indicator {fmt.value!r} is not supported (01 or 02)",
        )
    _check_crc(raw, located)
    return _build_parsed(raw, fields)


def _parses(text: str) -> bool:
    try:
        _parse_tlvs(text, nested=False)
    except _TlvError:
        return False
    return True


def _check_crc(raw: str, located: list[tuple[int, Tlv]]) -> None:
    crc_at = [i for i, (_, tlv) in enumerate(located) if tlv.tag == "63"]
    if not crc_at:
        raise QrError("QR_CRC_MISSING", "the code has no checksum (tag 63)")
    index = crc_at[0]
    offset, crc_tlv = located[index]
    if index != len(located) - 1:
        raise QrError("QR_MALFORMED", "the checksum (tag 63) must be the last field")
    if len(crc_tlv.value) != 4:
        raise QrError(
            "QR_MALFORMED", f"the checksum (tag 63) has {len(crc_tlv.value)} characters, not 4"
        )
    expected = _crc_hex(raw[: offset + 4])
    if crc_tlv.value.upper() != expected:
        raise QrError(
            "QR_CRC_MISMATCH",
            f"checksum mismatch: the code says {crc_tlv.value}, its content gives {expected} "
            "(damaged or altered code)",
        )


def _build_parsed(raw: str, fields: list[Tlv]) -> ParsedQr:
    def top(tag: str) -> str | None:
        for tlv in fields:
            if tlv.tag == tag:
                return tlv.value
        return None

    scheme, ours = _detect_scheme(fields)
    poi = top("01")
    initiation: Literal["static", "dynamic"] | None = (
        "static" if poi == "11" else "dynamic" if poi == "12" else None
    )
    additional = next((t for t in fields if t.tag == "62"), None)
    currency_numeric = top("53")
    return ParsedQr(
        raw=raw,
        scheme=scheme,
        scheme_name=SCHEME_NAMES[scheme],
        initiation=initiation,
        amount_text=top("54"),
        currency_numeric=currency_numeric,
        currency=currency_from_numeric(currency_numeric) if currency_numeric else None,
        merchant_name=top("59"),
        merchant_city=top("60"),
        country=top("58"),
        mcc=top("52"),
        bill_number=additional.child_value("01") if additional else None,
        terminal_label=additional.child_value("07") if additional else None,
        fields=tuple(fields),
        scanpay_merchant_code=ours.child_value("01") if ours else None,
        scanpay_token=ours.child_value("02") if ours else None,
    )


def _parse_upi(raw: str) -> ParsedQr:
    try:
        parts = urlsplit(raw)
    except ValueError as exc:  # e.g. "upi://[pay": an unbalanced IPv6 bracket
        raise QrError("QR_MALFORMED", f"not a valid UPI link: {exc}") from None
    if parts.netloc.lower() != "pay":
        raise QrError(
            "QR_UNSUPPORTED_FORMAT",
            f"only upi://pay links are payment codes, not upi://{parts.netloc}",
        )
    params = parse_qsl(parts.query, keep_blank_values=True)
    fields = tuple(Tlv(key, value) for key, value in params)
    values: dict[str, str] = {}
    for key, value in params:
        values.setdefault(key.lower(), value)
    if not values.get("pa"):
        raise QrError("QR_MALFORMED", "the UPI link has no payee address (pa)")
    currency = (values.get("cu") or "INR").upper()
    known = currency in CURRENCIES
    amount_text = values.get("am") or None
    return ParsedQr(
        raw=raw,
        scheme="UPI",
        scheme_name=SCHEME_NAMES["UPI"],
        initiation=None,
        amount_text=amount_text,
        currency_numeric=numeric_code(currency) if known else None,
        currency=currency if known else None,
        merchant_name=values.get("pn") or None,
        merchant_city=None,
        country="IN",
        mcc=values.get("mc") or None,
        bill_number=values.get("tr") or None,
        terminal_label=None,
        fields=fields,
        scanpay_merchant_code=None,
        scanpay_token=None,
    )


# --------------------------------------------------------------------------- alphanumeric text

_SPECIAL_LETTERS: Final = str.maketrans(
    {
        "æ": "ae",
        "Æ": "AE",
        "ø": "o",
        "Ø": "O",
        "œ": "oe",
        "Œ": "OE",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "TH",
        "ı": "i",
        "ß": "ss",
        "'": None,
        "’": None,
        "ʼ": None,
        "`": None,
    }
)


@functools.lru_cache(maxsize=4096)
def _alnum_normalize(text: str) -> str:
    """NFKD, strip accents, upper-case; other characters become spaces; spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPECIAL_LETTERS))
    letters = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    upper = letters.upper()
    mapped = "".join(ch if ch in _ALNUM_SET else " " for ch in upper)
    return " ".join(mapped.split())


def to_qr_alnum(text: str, max_len: int) -> str:
    """Transliterate ``text`` into the QR alphanumeric charset, at most ``max_len`` characters.

    ``to_qr_alnum("Café Zürich-Öst", 25) == "CAFE ZURICH-OST"``. The result never starts or
    ends with a space; it may be empty (a name in a non-Latin script only).
    """
    if max_len < 0:
        raise ValueError("max_len must not be negative")
    return _alnum_normalize(text)[:max_len].rstrip()


def is_qr_alnum(text: str) -> bool:
    """True when every character is in the QR alphanumeric charset (``0-9A-Z $%*+-./:``)."""
    return all(ch in _ALNUM_SET for ch in text)


def names_match(registered: str, in_qr: str) -> bool:
    """Does the name printed in a QR belong to the registered merchant (sticker-swap check)?

    Both are normalised with the same transliteration as the encoder. A prefix of the
    registered name still matches when it is at least 10 characters long, or when the
    registered name is longer than 25 and the QR holds its 25-character cut. A registered
    name with nothing left after transliteration matches only the encoder's filler
    ``"NA"`` or the identical text.
    """
    if " ".join(registered.split()).casefold() == " ".join(in_qr.split()).casefold():
        return True
    reg = _alnum_normalize(registered)
    qr = _alnum_normalize(in_qr)
    if not reg:
        return qr == FALLBACK_TEXT
    if not qr:
        return False
    if reg == qr:
        return True
    if not reg.startswith(qr):
        return False
    return len(qr) >= 10 or (len(reg) > NAME_MAX and qr == reg[:NAME_MAX].rstrip())


# --------------------------------------------------------------------------- encode


def _tlv(tag: str, value: str) -> str:
    if not 1 <= len(value) <= 99:
        raise QrError("QR_TOO_LONG", f"field {tag} would hold {len(value)} characters (1-99)")
    return f"{tag}{len(value):02d}{value}"


def _emv_amount(amount: Money) -> str:
    text = amount.decimal_string()
    if len(text) > 13 and "." in text:  # EMV tag 54 holds up to 13 characters
        text = text.rstrip("0").rstrip(".")
    if len(text) > 13:
        raise QrError("QR_BAD_AMOUNT", f"{amount} has too many digits for a QR code (13 max)")
    return text


def encode_scanpay(
    *,
    dynamic: bool,
    merchant_code: str,
    token: str,
    mcc: str,
    amount: Money | None,
    country: str,
    name: str,
    city: str,
    bill_number: str | None = None,
    terminal_label: str | None = None,
    max_length: int = MAX_PAYLOAD_LENGTH,
    currency: str | None = None,
) -> str:
    """Build our EMV MPM payload, alphanumeric-mode only, at most ``max_length`` characters.

    ``currency`` is needed only without an ``amount`` (a static code still carries tag 53);
    with an amount it defaults to, and must equal, the amount's currency.

    Budget: the required fields (00, 01, 26, 52, 53, 54, 58, 59, 60, 63) come first. The
    name (max 25) and city (max 15) are transliterated by :func:`to_qr_alnum` and cut only
    when needed (the city keeps at least 3 characters). Tag 62 then gets the bill number
    (only when it is already alphanumeric-mode text, never altered) and the terminal label
    (upper-cased) while the total stays within ``max_length``. ``QrError("QR_TOO_LONG")``
    when even the minimum cannot fit; ``QR_INVALID_FIELD`` / ``QR_BAD_AMOUNT`` for bad input.
    """
    if not _MERCHANT_CODE.fullmatch(merchant_code):
        raise QrError("QR_INVALID_FIELD", "merchant code must be 1-10 characters 0-9 A-Z")
    if not _BASE32.fullmatch(token):
        raise QrError("QR_INVALID_FIELD", "token must be upper-case base32 (A-Z 2-7), unpadded")
    if not _MCC.fullmatch(mcc):
        raise QrError("QR_INVALID_FIELD", "merchant category code must be 4 digits")
    if not _COUNTRY.fullmatch(country):
        raise QrError("QR_INVALID_FIELD", "country must be an ISO 3166 alpha-2 code (e.g. DE)")
    if amount is not None:
        if currency is not None and currency != amount.currency:
            raise QrError("QR_INVALID_FIELD", "currency differs from the amount's currency")
        currency = amount.currency
        if amount.amount_minor <= 0:
            raise QrError("QR_BAD_AMOUNT", "a QR amount must be positive")
    if currency is None or currency not in CURRENCIES:
        raise QrError("QR_INVALID_FIELD", "a known ISO 4217 currency is required")

    account = _tlv("00", SCANPAY_GUID) + _tlv("01", merchant_code) + _tlv("02", token)
    head = (
        _tlv("00", "01")
        + _tlv("01", "12" if dynamic else "11")
        + _tlv(_SCANPAY_TAG, account)
        + _tlv("52", mcc)
        + _tlv("53", numeric_code(currency))
        + (_tlv("54", _emv_amount(amount)) if amount is not None else "")
        + _tlv("58", country)
    )
    # Everything but the name and city text: their two headers, and "6304" + checksum.
    fixed = len(head) + 4 + 4 + 8
    available = max_length - fixed

    name_full = to_qr_alnum(name, NAME_MAX) or FALLBACK_TEXT
    city_full = to_qr_alnum(city, CITY_MAX) or FALLBACK_TEXT
    city_min = min(len(city_full), 3)
    name_len = min(len(name_full), available - city_min)
    if name_len < 1:
        raise QrError(
            "QR_TOO_LONG",
            f"the required fields need {fixed + 1 + city_min} characters; "
            f"the limit is {max_length}",
        )
    name_text = name_full[:name_len].rstrip()
    city_text = city_full[: available - len(name_text)].rstrip()
    body = head + _tlv("59", name_text) + _tlv("60", city_text)

    room = max_length - len(body) - 8
    subfields: list[str] = []
    candidates: list[tuple[str, str | None]] = [
        ("01", bill_number if bill_number and is_qr_alnum(bill_number) else None),
        (
            "07",
            terminal_label.upper()
            if terminal_label and is_qr_alnum(terminal_label.upper())
            else None,
        ),
    ]
    for tag, value in candidates:
        if value is None or len(value) > ADDITIONAL_SUBFIELD_MAX:
            continue
        cost = 4 + len(value) + (0 if subfields else 4)
        if cost <= room:
            subfields.append(_tlv(tag, value))
            room -= cost
    if subfields:
        body += _tlv("62", "".join(subfields))

    body += "6304"
    payload = body + _crc_hex(body)
    if len(payload) > max_length:  # pragma: no cover - guarded by the budget above
        raise QrError("QR_TOO_LONG", f"payload of {len(payload)} characters exceeds {max_length}")
    return payload


# --------------------------------------------------------------------------- inspect


def inspect(payload: str) -> dict[str, object]:
    """The ``scanpay qr inspect`` JSON object: what a code is, and whether it is valid."""
    result: dict[str, object] = {
        "valid": False,
        "error": None,
        "reason": None,
        "scheme": None,
        "scheme_name": None,
        "initiation": None,
        "amount": None,
        "currency": None,
        "currency_numeric": None,
        "merchant_name": None,
        "merchant_city": None,
        "country": None,
        "payable": False,
        "notice": None,
    }
    try:
        parsed = parse(payload)
    except QrError as exc:
        result["error"] = exc.message
        result["reason"] = exc.reason
        return result
    result.update(
        scheme=parsed.scheme,
        scheme_name=parsed.scheme_name,
        initiation=parsed.initiation,
        amount=parsed.amount_text,
        currency=parsed.currency,
        currency_numeric=parsed.currency_numeric,
        merchant_name=parsed.merchant_name,
        merchant_city=parsed.merchant_city,
        country=parsed.country,
        payable=parsed.payable,
        notice=parsed.notice,
    )
    try:
        money = parsed.amount()
    except QrError as exc:
        result["error"] = exc.message
        result["reason"] = exc.reason
        result["payable"] = False
        return result
    if money is not None:
        result["amount"] = money.decimal_string()
    result["valid"] = True
    return result
