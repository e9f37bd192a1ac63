"""The ``scanpay`` command line: one entry point for the PSP, the apps and the tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from psp_server.cli import admin, card, cardnet, demo, psp, qr, reconcile

    parser = argparse.ArgumentParser(
        prog="scanpay",
        description="Scan-and-swipe payments: PSP server, cashier terminal, wallet and tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (psp, admin, qr, card, cardnet, reconcile, demo):
        module.register(sub)
    sub.add_parser("till", help="the cashier terminal (scanpay till --help)", add_help=False)
    sub.add_parser(
        "wallet", help="the consumer wallet web app (scanpay wallet --help)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # The apps own their arguments.
    if args_list[:1] == ["till"]:
        from pos_terminal.__main__ import main as till_main

        return int(till_main(args_list[1:]))
    if args_list[:1] == ["wallet"]:
        from wallet_app.__main__ import main as wallet_main

        return int(wallet_main(args_list[1:]))
    if args_list[:2] == ["qr", "scan"]:
        from wallet_app.scan_cli import main as scan_main

        return int(scan_main(args_list[2:]))
    parser = build_parser()
    args = parser.parse_args(args_list)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
