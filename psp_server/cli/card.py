"""`scanpay card`: card tools.

    scanpay card parse '%B4111111111111111^DOE/JANE^29121010000?;4111111111111111=2912101?'
    echo "$SWIPE" | scanpay card parse -

prints one JSON object and never the full card number; exits 0 for a usable card, 1 if not.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("card", help="card tools (parse a swipe)")
    cmds = p.add_subparsers(dest="card_command", required=True, metavar="SUBCOMMAND")
    parse = cmds.add_parser(
        "parse", help="parse what a magstripe reader typed; print JSON (PAN masked)"
    )
    parse.add_argument("trackdata", help="the swipe text, or - to read it from stdin")
    parse.add_argument("--now", help="check expiry against this ISO date/time instead of now (UTC)")
    parse.set_defaults(func=_parse)


def describe(data: str, now: datetime) -> dict[str, Any]:
    """The JSON object ``scanpay card parse`` prints."""
    from psp_server.domain.cards import CardError, read_swipe, validate_swipe

    out: dict[str, Any] = {
        "valid": False,
        "error": None,
        "reason": None,
        "pan_masked": None,
        "last4": None,
        "brand": None,
        "name": None,
        "expiry": None,
        "service_code": None,
        "luhn_ok": None,
        "tracks": [],
    }
    try:
        swipe = read_swipe(data)
    except CardError as exc:
        out.update(error=exc.message, reason=exc.reason)
        return out
    out.update(
        pan_masked=swipe.masked,
        last4=swipe.last4,
        brand=swipe.brand.value,
        name=swipe.name,
        expiry=swipe.expiry_yymm,
        service_code=swipe.service_code,
        luhn_ok=swipe.luhn_ok,
        tracks=list(swipe.track_numbers),
    )
    try:
        validate_swipe(swipe, now)
    except CardError as exc:
        out.update(error=exc.message, reason=exc.reason)
        return out
    out["valid"] = True
    return out


def _parse(args: argparse.Namespace) -> int:
    data = sys.stdin.read() if args.trackdata == "-" else args.trackdata
    if args.now:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            print(f"--now: not an ISO date/time: {args.now!r}", file=sys.stderr)
            return 2
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
    else:
        now = datetime.now(UTC)
    result = describe(data, now)
    print(json.dumps(result))
    return 0 if result["valid"] else 1
