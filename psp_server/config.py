"""Settings, from arguments and the environment. Secrets live in the data directory
(or the environment), never in the database."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path


def default_data_dir() -> Path:
    env = os.environ.get("SCANPAY_DATA")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "scanpay"


def load_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    """A random key kept in a 0600 file, created on first use."""
    if path.exists():
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(nbytes)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return data


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    db_url: str = ""
    listen: str = "127.0.0.1:50051"
    public_base_url: str = "https://pay.scanpay.example"
    secret: bytes = b""
    fx_markup_bps: int = 150
    default_discount_bps: int = 100
    fx_quote_ttl: timedelta = timedelta(seconds=60)
    quote_ttl: timedelta = timedelta(minutes=5)
    access_ttl: timedelta = timedelta(minutes=15)
    refresh_ttl: timedelta = timedelta(days=30)
    max_login_failures: int = 5
    login_lockout: timedelta = timedelta(seconds=30)
    sweep_interval: float = 1.0
    max_batch: int = 128
    # Under load, how long (s) a small group commit on SQLite waits for more jobs
    # (GroupCommitWriter._drain_once); 0 turns it off. Never for a lone job.
    commit_delay: float = 0.002
    # Card rail: the network's HOST:PORT ("" = card RPCs answer UNIMPLEMENTED).
    cardnet: str = ""
    acquirer_id: str = "123456"
    cardnet_timeout: float = 5.0
    cardnet_failure_threshold: int = 5
    cardnet_reset_timeout: float = 10.0
    # How often queued reversals are retried ("reverse on recovery").
    reversal_interval: float = 1.0
    # Where the network drops settlement files (<batch_id>.csv); None: fees are not booked
    # at batch close.
    settlement_dir: Path | None = None
    # The PAN vault key: 64 hex digits or base64 (SCANPAY_PAN_KEY), else a key file.
    pan_key: str = ""
    pan_key_file: Path | None = None

    def resolve(self) -> Settings:
        """Fill the defaults that depend on the data directory."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.db_url:
            self.db_url = (
                os.environ.get("SCANPAY_DB", "") or f"sqlite:///{self.data_dir / 'psp.db'}"
            )
        if not self.secret:
            env = os.environ.get("SCANPAY_SECRET")
            self.secret = (
                env.encode() if env else load_or_create_secret(self.data_dir / "secret.key")
            )
        if not self.cardnet:
            self.cardnet = os.environ.get("SCANPAY_CARDNET", "")
        if not self.pan_key:
            self.pan_key = os.environ.get("SCANPAY_PAN_KEY", "")
        if self.pan_key_file is None:
            self.pan_key_file = self.data_dir / "pan.key"
        if self.settlement_dir is None and os.environ.get("SCANPAY_SETTLEMENT_DIR"):
            self.settlement_dir = Path(os.environ["SCANPAY_SETTLEMENT_DIR"])
        return self
