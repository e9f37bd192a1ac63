"""Prefixed, time-ordered identifiers: ``pay_01JD3...``.

The suffix is 26 characters of Crockford base32: 48 bits of milliseconds then 80 random
bits, so ids sort by creation time (ULID layout).
"""

from __future__ import annotations

import base64
import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RFC4648 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

PREFIXES = frozenset(
    {"pay", "txn", "acc", "qr", "swp", "mer", "trm", "con", "ref", "rtk", "bat", "dsp"}
)


def _b32(value: int, length: int, alphabet: str) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(alphabet[rem])
    return "".join(reversed(out))


# RFC 4648 base32 letters -> Crockford's, whose ASCII order is the numeric order.
_TO_CROCKFORD = bytes.maketrans(_RFC4648.encode(), _CROCKFORD.encode())


def new_id(prefix: str, now_ms: int | None = None) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
    # The first 130 bits of 17 bytes are two zero bits and the 128 bits of the value:
    # 26 base32 digits, most significant first.
    raw = base64.b32encode((value << 6).to_bytes(17, "big"))[:26].translate(_TO_CROCKFORD)
    return f"{prefix}_{raw.decode()}"


def looks_like(prefix: str, value: str) -> bool:
    if not value.startswith(prefix + "_") or len(value) != len(prefix) + 27:
        return False
    return all(c in _CROCKFORD for c in value[len(prefix) + 1 :])


def new_token(length: int = 20) -> str:
    """A random upper-case RFC 4648 base32 string (QR alphanumeric mode friendly)."""
    return base64.b32encode(secrets.token_bytes((5 * length + 7) // 8)).decode()[:length]


def new_secret(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)
