"""PAN at rest: AES-256-GCM encryption and a keyed fingerprint for look-ups (PCI DSS 3.5).

The key comes from configuration or a key file, never from the database that holds the
ciphertexts. Two sub-keys are derived from it with HKDF-SHA256, one to encrypt and one to
fingerprint, so that neither use weakens the other.

Ciphertext layout: ``b"\\x01" || nonce (12 bytes) || AES-GCM(ciphertext || tag)``, with the
version byte also bound as associated data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_VERSION = b"\x01"
_NONCE_BYTES = 12
_AAD = b"scanpay.pan.v1"


class PanVaultError(ValueError):
    """A bad key, key file or ciphertext. ``reason`` is stable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def pan_fingerprint(pan: str, key: bytes) -> str:
    """HMAC-SHA256 of the PAN under ``key``, hex: equal PANs give equal fingerprints."""
    if not key:
        raise PanVaultError("PAN_VAULT_BAD_KEY", "fingerprint key must not be empty")
    return hmac.new(key, pan.encode("ascii"), hashlib.sha256).hexdigest()


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


class PanVault:
    """Encrypts, decrypts and fingerprints PANs with one 32-byte master key."""

    __slots__ = ("_aead", "_fingerprint_key")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise PanVaultError("PAN_VAULT_BAD_KEY", f"the PAN key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(_derive(key, b"scanpay pan encryption"))
        self._fingerprint_key = _derive(key, b"scanpay pan fingerprint")

    def __repr__(self) -> str:
        return "PanVault(<key hidden>)"

    @classmethod
    def from_text(cls, text: str) -> PanVault:
        """A key from configuration: 64 hex digits or base64 of 32 bytes."""
        value = text.strip()
        try:
            key = bytes.fromhex(value) if len(value) == 2 * KEY_BYTES else b""
        except ValueError:
            key = b""
        if not key:
            try:
                key = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_")
            except (binascii.Error, ValueError):
                key = b""
        if len(key) != KEY_BYTES:
            raise PanVaultError(
                "PAN_VAULT_BAD_KEY", "the PAN key must be 64 hex digits or base64 of 32 bytes"
            )
        return cls(key)

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str]) -> PanVault:
        """Load the key from ``path``; create it (32 random bytes, mode 0600) if missing.

        An existing file readable by group or others is refused, as ssh refuses such keys.
        """
        p = Path(path)
        if not p.exists():
            # Write a complete key under a temporary name, then link it into place: the key
            # file appears whole or not at all, and a concurrent creator's key wins.
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, os.urandom(KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, p)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        mode = p.stat().st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PanVaultError(
                "PAN_VAULT_KEY_FILE_OPEN",
                f"{p} is accessible by other users; chmod 600 it",
            )
        data = p.read_bytes()
        if len(data) == KEY_BYTES:
            return cls(data)
        return cls.from_text(data.decode("ascii", errors="replace"))

    def encrypt(self, pan: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, pan.encode("ascii"), _VERSION + _AAD)

    def decrypt(self, blob: bytes) -> str:
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
            raise PanVaultError("PAN_VAULT_BAD_CIPHERTEXT", "not a PAN ciphertext")
        nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _VERSION + _AAD).decode("ascii")
        except InvalidTag:
            raise PanVaultError(
                "PAN_VAULT_BAD_CIPHERTEXT", "PAN ciphertext does not match this key"
            ) from None

    def fingerprint(self, pan: str) -> str:
        return pan_fingerprint(pan, self._fingerprint_key)
