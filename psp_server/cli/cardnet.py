"""`scanpay cardnet`: the card-network + issuer simulator (its own process).

scanpay cardnet serve --listen 127.0.0.1:8583 --data ./cardnet-data
scanpay cardnet holds --data ./cardnet-data      # live authorization holds, JSON
scanpay cardnet chargebacks --data ./cardnet-data
scanpay cardnet cards                            # the test cards, JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_DATA = "cardnet-data"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "cardnet", help="card network + issuer simulator (ISO 8583 over TCP)"
    )
    cmds = p.add_subparsers(dest="cardnet_command", required=True, metavar="SUBCOMMAND")

    serve = cmds.add_parser("serve", help="run the simulator until SIGTERM/SIGINT")
    serve.add_argument("--listen", default="127.0.0.1:8583", help="HOST:PORT (port 0: any)")
    serve.add_argument("--data", default=DEFAULT_DATA, help="state and settlement files")
    serve.add_argument(
        "--hold-ttl",
        type=float,
        default=7 * 24 * 3600,
        metavar="SECONDS",
        help="how long an authorization hold lives (default 7 days)",
    )
    serve.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING...")
    serve.set_defaults(func=_serve)

    holds = cmds.add_parser("holds", help="print the live authorization holds as JSON")
    holds.add_argument("--data", default=DEFAULT_DATA)
    holds.set_defaults(func=_holds)

    chargebacks = cmds.add_parser("chargebacks", help="print the chargebacks raised, JSON")
    chargebacks.add_argument("--data", default=DEFAULT_DATA)
    chargebacks.add_argument("--merchant", help="only this merchant's")
    chargebacks.set_defaults(func=_chargebacks)

    cards = cmds.add_parser("cards", help="print the test cards as JSON")
    cards.set_defaults(func=_cards)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _serve(args: argparse.Namespace) -> int:
    from psp_server.cardnet.server import serve

    try:
        host, port = parse_listen(args.listen)
    except argparse.ArgumentTypeError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    def ready(bound_host: str, bound_port: int) -> None:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        print(f"cardnet listening on {shown}:{bound_port}", flush=True)

    try:
        asyncio.run(
            serve(host, port, args.data, hold_ttl=timedelta(seconds=args.hold_ttl), ready=ready)
        )
    except OSError as exc:
        print(f"cardnet: {exc}", file=sys.stderr)
        return 1
    return 0


def _holds(args: argparse.Namespace) -> int:
    from psp_server.cardnet.store import Store
    from psp_server.domain.cards import mask_pan

    try:
        store = Store(args.data, readonly=True)
    except Exception as exc:
        print(f"cardnet: cannot open {args.data}: {exc}", file=sys.stderr)
        return 1
    try:
        holds = [
            {
                "network_transaction_id": t.ntid,
                "pan_masked": mask_pan(t.pan),
                "merchant_id": t.merchant_id,
                "terminal_id": t.terminal_id,
                "amount_minor": t.amount_minor,
                "currency": t.currency,
                "created_at": t.created_at,
                "expires_at": t.hold_expires_at,
            }
            for t in store.active_holds(datetime.now(UTC))
        ]
    finally:
        store.close()
    print(json.dumps(holds, indent=2))
    return 0


def _chargebacks(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from psp_server.cardnet.store import Store

    try:
        store = Store(args.data, readonly=True)
    except Exception as exc:
        print(f"cardnet: cannot open {args.data}: {exc}", file=sys.stderr)
        return 1
    try:
        rows = [asdict(r) for r in store.chargebacks(args.merchant)]
    finally:
        store.close()
    print(json.dumps(rows, indent=2))
    return 0


def _cards(args: argparse.Namespace) -> int:
    from psp_server.cardnet.issuers import TEST_CARDS, route

    def issuer_name(pan: str) -> str | None:
        issuer = route(pan)
        return issuer.name if issuer else None

    cards = [
        {
            "pan": a.pan,
            "issuer": issuer_name(a.pan),
            "funding": a.funding.value,
            "behaviour": a.behaviour.value,
            "limit_minor": a.limit_minor,
            "note": a.note,
        }
        for a in TEST_CARDS.values()
    ]
    print(json.dumps(cards, indent=2))
    return 0
