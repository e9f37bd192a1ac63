"""`scanpay reconcile`."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("reconcile", help="(not yet available)")
    p.set_defaults(func=_todo)


def _todo(args: argparse.Namespace) -> int:
    print("not yet available")
    return 2
