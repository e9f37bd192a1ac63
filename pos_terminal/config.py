"""Where the till keeps its files and how it finds its PSP and API key.

Precedence for the PSP address and key: command line, then the environment
(``SCANPAY_PSP``, ``SCANPAY_TILL_KEY``), then ``config.json`` in the data directory, which the
till writes after its first successful connection.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PSP = "127.0.0.1:50051"
CONFIG_NAME = "config.json"


@dataclass(frozen=True, slots=True)
class TillConfig:
    psp: str
    key: str
    data_dir: Path


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("SCANPAY_DATA"):
        return Path(env["SCANPAY_DATA"]) / "till"
    return Path.home() / ".local" / "share" / "scanpay" / "till"


def load_saved(data_dir: Path) -> dict[str, str]:
    try:
        raw = json.loads((data_dir / CONFIG_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in raw.items() if k in ("psp", "key")}


def save(config: TillConfig) -> None:
    """Write ``config.json`` (owner-only: it holds the terminal's API key)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    path = config.data_dir / CONFIG_NAME
    tmp = path.with_name(f".{CONFIG_NAME}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"psp": config.psp, "key": config.key}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def resolve(
    psp: str | None,
    key: str | None,
    data_dir: Path | None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, str | None, Path]:
    """The PSP address, the API key (``None`` when nowhere to be found) and the data dir."""
    env = os.environ if env is None else env
    directory = Path(data_dir) if data_dir else default_data_dir(env)
    saved = load_saved(directory)
    address = psp or env.get("SCANPAY_PSP") or saved.get("psp") or DEFAULT_PSP
    api_key = key or env.get("SCANPAY_TILL_KEY") or saved.get("key")
    return address, api_key, directory
