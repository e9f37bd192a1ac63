"""Shared command-line plumbing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from psp_server.config import Settings, default_data_dir
from psp_server.domain.errors import DomainError
from psp_server.domain.money import MoneyError


def add_db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data directory (default: $SCANPAY_DATA or ~/.local/share/scanpay)",
    )
    p.add_argument(
        "--db",
        default="",
        help="database URL (default: SQLite in the data directory; or postgresql://...)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(data_dir=args.data or default_data_dir(), db_url=args.db).resolve()


def fail(exc: Exception, as_json: bool = False) -> int:
    reason = getattr(exc, "reason", "ERROR")
    if as_json:
        print(json.dumps({"error": str(exc), "reason": reason}))
    else:
        print(f"error: {exc} ({reason})", file=sys.stderr)
    return 1


def emit(obj: dict[str, Any], as_json: bool, human: str) -> None:
    print(json.dumps(obj, indent=None) if as_json else human)


USER_ERRORS = (DomainError, MoneyError)
