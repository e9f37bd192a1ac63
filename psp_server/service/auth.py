"""Credentials: terminal API keys, consumer passwords (argon2), access tokens (JWT) and
rotating refresh tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from psp_server.domain.errors import Unauthenticated

_hasher = PasswordHasher()
# A real hash to verify against when the e-mail is unknown, so the time taken does not
# tell which e-mails exist.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True, slots=True)
class MerchantPrincipal:
    merchant_id: str
    terminal_id: str
    terminal_label: str


@dataclass(frozen=True, slots=True)
class ConsumerPrincipal:
    consumer_id: str


def new_api_key() -> tuple[str, str, str]:
    """Returns (key, prefix, hash). The key is shown once; only the hash is stored."""
    prefix = "sk_" + secrets.token_hex(5)
    key = f"{prefix}_{secrets.token_urlsafe(24)}"
    return key, prefix, sha256_hex(key)


def api_key_prefix(key: str) -> str | None:
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != "sk" or len(parts[1]) != 10 or len(key) > 100:
        return None
    return f"sk_{parts[1]}"


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_hash(value: str, expected_hex: str) -> bool:
    return hmac.compare_digest(sha256_hex(value), expected_hex)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def issue_access_token(secret: bytes, consumer_id: str, now: datetime, ttl: timedelta) -> str:
    claims = {
        "sub": consumer_id,
        "typ": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_access_token(secret: bytes, token: str, now: datetime) -> ConsumerPrincipal:
    if not token or len(token) > 2000:
        raise Unauthenticated("missing or malformed access token", reason="INVALID_TOKEN")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            # Time is checked below against the server's clock, not PyJWT's system time.
            options={"require": ["exp", "sub", "typ"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise Unauthenticated("invalid access token", reason="INVALID_TOKEN") from None
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
        raise Unauthenticated("invalid access token", reason="INVALID_TOKEN")
    if int(claims["exp"]) <= int(now.timestamp()):
        raise Unauthenticated("access token expired; refresh it", reason="TOKEN_EXPIRED")
    return ConsumerPrincipal(claims["sub"])


def token_expiry(token: str) -> float:
    """The ``exp`` of an already verified token (no signature check)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return float(claims["exp"])


def new_refresh_token() -> tuple[str, str]:
    token = "rt_" + secrets.token_urlsafe(32)
    return token, sha256_hex(token)
