"""The ISO 8583 (1987) dialect spoken between the PSP (acquirer) and the card network.

Encoding is done by pyiso8583 with :data:`SPEC`, our own field table: ASCII MTI, binary
bitmaps, ASCII data and ASCII length prefixes. Only the fields listed here exist; anything
else is a format error. Field contents are checked against their ISO class (``n`` digits,
``an``, ``ans``, ``z`` track 2 characters) on both encode and decode, which pyiso8583 does not
do by itself.

A message is a plain ``dict[str, str]``: ``{"t": "0100", "2": "4111...", "4": "000000001250"}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import iso8583

Message = dict[str, str]

# Message type indicators.
AUTH_REQUEST, AUTH_RESPONSE = "0100", "0110"
FINANCIAL_REQUEST, FINANCIAL_RESPONSE = "0200", "0210"
ADVICE_REQUEST, ADVICE_RESPONSE = "0220", "0230"
REVERSAL_REQUEST, REVERSAL_RESPONSE = "0400", "0410"
BATCH_REQUEST, BATCH_RESPONSE = "0500", "0510"
# Administrative (06xx): in this dialect only the representment of a chargeback.
REPRESENTMENT_REQUEST, REPRESENTMENT_RESPONSE = "0600", "0610"
NETWORK_REQUEST, NETWORK_RESPONSE = "0800", "0810"
REQUEST_MTIS = frozenset(
    {
        AUTH_REQUEST,
        FINANCIAL_REQUEST,
        ADVICE_REQUEST,
        REVERSAL_REQUEST,
        BATCH_REQUEST,
        REPRESENTMENT_REQUEST,
        NETWORK_REQUEST,
    }
)

# Processing codes (field 3): transaction type, from account, to account.
PROC_PURCHASE = "000000"
PROC_REFUND = "200000"
# Network management information codes (field 70).
NMI_ECHO = "301"

# POS entry mode (field 22): 90 = full magnetic stripe read, 2 = no PIN entry capability.
POS_ENTRY_MAGSTRIPE = "902"
POS_ENTRY_KEYED = "012"


# Field 72 (representment evidence): at most this many ASCII characters.
MAX_EVIDENCE_LEN = 9999


def _f(enc_len: int, max_len: int, desc: str, *, binary: bool = False) -> dict[str, Any]:
    return {
        "data_enc": "b" if binary else "ascii",
        "len_enc": "ascii",
        "len_type": enc_len,
        "max_len": max_len,
        "desc": desc,
    }


# len_type: 0 fixed, 2 LLVAR, 3 LLLVAR, 4 LLLLVAR (ASCII length digits).
SPEC: dict[str, dict[str, Any]] = {
    "h": _f(0, 0, "Message Header"),
    "t": _f(0, 4, "Message Type"),
    "p": _f(0, 8, "Bitmap, Primary", binary=True),
    "1": _f(0, 8, "Bitmap, Secondary", binary=True),
    "2": _f(2, 19, "Primary Account Number"),
    "3": _f(0, 6, "Processing Code"),
    "4": _f(0, 12, "Amount, Transaction (minor units)"),
    "7": _f(0, 10, "Transmission Date and Time (MMDDhhmmss, UTC)"),
    "11": _f(0, 6, "System Trace Audit Number"),
    "14": _f(0, 4, "Expiration Date (YYMM)"),
    "15": _f(0, 4, "Settlement Date (MMDD)"),
    "22": _f(0, 3, "POS Entry Mode"),
    "25": _f(0, 2, "POS Condition Code"),
    "32": _f(2, 11, "Acquiring Institution ID"),
    "35": _f(2, 37, "Track 2 Data"),
    "37": _f(0, 12, "Network Transaction ID (retrieval reference)"),
    "38": _f(0, 6, "Authorization ID Response"),
    "39": _f(0, 2, "Response Code"),
    # ISO fixes 41/42 at 8/15 characters; this dialect lets the PSP's own ids travel as is.
    "41": _f(2, 32, "Card Acceptor Terminal ID"),
    "42": _f(2, 32, "Card Acceptor ID (merchant)"),
    "44": _f(2, 99, "Additional Response Data (text)"),
    "48": _f(3, 255, "Merchant Reference"),
    "49": _f(0, 3, "Currency Code, Transaction"),
    "56": _f(2, 12, "Original Network Transaction ID (refunds, representments)"),
    "62": _f(3, 64, "Batch ID"),
    "63": _f(4, 9999, "Chargebacks"),
    "70": _f(0, 3, "Network Management Information Code"),
    # ISO: "Data Record", LLLVAR ..999; here LLLLVAR so the merchant's evidence travels whole.
    "72": _f(4, MAX_EVIDENCE_LEN, "Data Record (representment evidence)"),
    "74": _f(0, 10, "Credits, Number (refunds)"),
    "76": _f(0, 10, "Debits, Number (sales)"),
    "86": _f(0, 16, "Credits, Amount (refunds, minor units)"),
    "88": _f(0, 16, "Debits, Amount (sales, minor units)"),
    "90": _f(0, 42, "Original Data Elements"),
}

# ISO character class of each data field.
FIELD_CLASS: dict[str, str] = {
    "2": "n",
    "3": "n",
    "4": "n",
    "7": "n",
    "11": "n",
    "14": "n",
    "15": "n",
    "22": "n",
    "25": "n",
    "32": "n",
    "35": "z",
    "37": "an",
    "38": "an",
    "39": "an",
    "41": "ans",
    "42": "ans",
    "44": "ans",
    "48": "ans",
    "49": "n",
    "56": "an",
    "62": "ans",
    "63": "ans",
    "70": "n",
    "72": "ans",
    "74": "n",
    "76": "n",
    "86": "n",
    "88": "n",
    "90": "n",
}


class MessageFormatError(ValueError):
    """Bytes or a dict that are not a valid message of this dialect."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{message}: field {field}" if field else message)
        self.field = field


def _valid(kind: str, value: str) -> bool:
    if not value.isascii():
        return False
    if kind == "n":
        return value.isdigit()
    if kind == "an":
        return value.isalnum()
    if kind == "z":
        return all("0" <= ch <= "?" for ch in value)
    return value.isprintable()


def check(msg: Mapping[str, str]) -> None:
    """Raise :class:`MessageFormatError` unless every field is known and of its class."""
    mti = msg.get("t", "")
    if len(mti) != 4 or not mti.isdigit():
        raise MessageFormatError("bad message type", "t")
    for key, value in msg.items():
        if key in ("t", "p", "1", "h"):
            continue
        kind = FIELD_CLASS.get(key)
        if kind is None:
            raise MessageFormatError("field not in this dialect", key)
        if not isinstance(value, str) or not _valid(kind, value):
            raise MessageFormatError(f"field is not of class {kind}", key)


def encode(msg: Mapping[str, str]) -> bytes:
    """Encode a message. ``msg`` is not modified."""
    check(msg)
    doc = {k: v for k, v in msg.items() if k not in ("p", "1")}
    try:
        raw, _ = iso8583.encode(doc, SPEC)
    except iso8583.EncodeError as exc:
        raise MessageFormatError(exc.msg, exc.field) from None
    return bytes(raw)


def decode(data: bytes) -> Message:
    """Decode a message; the bitmaps (``p``, ``1``) are dropped from the result."""
    try:
        doc, _ = iso8583.decode(data, SPEC)
    except iso8583.DecodeError as exc:
        raise MessageFormatError(exc.msg, exc.field) from None
    except KeyError as exc:  # a bit set for a field this dialect does not have
        raise MessageFormatError("field not in this dialect", str(exc.args[0])) from None
    except (TypeError, ValueError) as exc:
        raise MessageFormatError(f"undecodable message ({exc})") from None
    msg = {k: v for k, v in doc.items() if k not in ("p", "1")}
    check(msg)
    return msg


def response_mti(request_mti: str) -> str:
    """``0100`` -> ``0110``, ``0220`` -> ``0230``: the response to a request or advice."""
    if request_mti not in REQUEST_MTIS:
        raise MessageFormatError("not a request message type", "t")
    return request_mti[:2] + str(int(request_mti[2]) + 1) + request_mti[3]


# --- field helpers --------------------------------------------------------------------------


def transmission_time(at: datetime) -> str:
    """Field 7: ``MMDDhhmmss`` in UTC."""
    return at.astimezone(UTC).strftime("%m%d%H%M%S")


def amount_field(amount_minor: int, width: int = 12) -> str:
    if amount_minor < 0 or amount_minor >= 10**width:
        raise MessageFormatError(f"amount does not fit {width} digits")
    return f"{amount_minor:0{width}d}"


@dataclass(frozen=True, slots=True)
class OriginalData:
    """Field 90: identifies the transaction a capture advice or reversal refers to."""

    mti: str
    stan: str
    transmission: str  # field 7 of the original, MMDDhhmmss
    acquirer_id: str

    def encode(self) -> str:
        value = f"{self.mti}{self.stan}{self.transmission}{self.acquirer_id:0>11}{'0' * 11}"
        if len(value) != 42 or not value.isdigit():
            raise MessageFormatError("bad original data elements", "90")
        return value

    @classmethod
    def parse(cls, value: str) -> OriginalData:
        if len(value) != 42 or not value.isdigit():
            raise MessageFormatError("bad original data elements", "90")
        return cls(value[0:4], value[4:10], value[10:20], value[20:31].lstrip("0") or "0")


@dataclass(frozen=True, slots=True)
class ChargebackRecord:
    """One chargeback in field 63 of a 0510: 31 fixed characters per record."""

    network_transaction_id: str  # 12
    amount_minor: int  # 12 digits
    currency_numeric: str  # 3
    reason_code: str  # 4

    def encode(self) -> str:
        return (
            f"{self.network_transaction_id:<12.12}{amount_field(self.amount_minor)}"
            f"{self.currency_numeric:0>3}{self.reason_code:<4.4}"
        )


CHARGEBACK_RECORD_LEN = 31
MAX_CHARGEBACKS_PER_MESSAGE = 9999 // CHARGEBACK_RECORD_LEN


def encode_chargebacks(records: Iterable[ChargebackRecord]) -> str:
    return "".join(r.encode() for r in records)


def decode_chargebacks(value: str) -> list[ChargebackRecord]:
    if len(value) % CHARGEBACK_RECORD_LEN:
        raise MessageFormatError("chargeback list length", "63")
    out = []
    for i in range(0, len(value), CHARGEBACK_RECORD_LEN):
        rec = value[i : i + CHARGEBACK_RECORD_LEN]
        amount = rec[12:24]
        if not amount.isdigit():
            raise MessageFormatError("chargeback amount", "63")
        out.append(ChargebackRecord(rec[0:12].strip(), int(amount), rec[24:27], rec[27:31]))
    return out


def evidence_field(text: str) -> str:
    """Field 72 from the merchant's evidence: printable ASCII, anything else escaped
    (``\\xe4``, ``\\u20ac``), line breaks and tabs as spaces."""
    flat = "".join(" " if ch in "\t\r\n" else ch for ch in text)
    value = flat.encode("ascii", "backslashreplace").decode("ascii")
    value = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in value)
    if len(value) > MAX_EVIDENCE_LEN:
        raise MessageFormatError(f"evidence longer than {MAX_EVIDENCE_LEN} characters", "72")
    return value


def masked(msg: Mapping[str, str]) -> dict[str, str]:
    """A copy safe to log: PAN masked, track 2 removed."""
    out = dict(msg)
    if "2" in out:
        pan = out["2"]
        out["2"] = pan[:6] + "*" * max(len(pan) - 10, 0) + pan[-4:]
    if "35" in out:
        out["35"] = "<track 2 hidden>"
    return out
