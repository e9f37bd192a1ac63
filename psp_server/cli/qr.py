"""`scanpay qr`: read EMV merchant-presented QR payloads.

``scanpay qr inspect PAYLOAD`` prints one JSON object describing the code (scheme, amount,
merchant, whether ScanPay can pay it) and exits 0 when the code is valid, 1 when it is not.
``PAYLOAD`` may be ``-`` to read it from standard input.

(``scanpay qr scan`` -- decoding a QR from a camera or an image -- is dispatched by
``psp_server.__main__`` to the wallet before this parser is reached.)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# Read at most this much from stdin: far above any QR payload, and parse() caps it anyway.
_STDIN_LIMIT = 64 * 1024


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "qr",
        help="inspect EMV QR payment codes (scanpay qr inspect PAYLOAD)",
        description="Read EMV merchant-presented QR payment codes of any network.",
    )
    p.set_defaults(func=_no_action, qr_parser=p)
    qr_sub = p.add_subparsers(dest="qr_command", metavar="ACTION")

    inspect_p = qr_sub.add_parser(
        "inspect",
        help="print what a QR payload is, as one JSON object (exit 1 if invalid)",
        description=(
            "Parse an EMV MPM payload (Pix, PromptPay, PayNow, DuitNow, QRIS, VietQR, "
            "BharatQR/UPI, ScanPay, ...) or a upi://pay link and print one JSON object."
        ),
    )
    inspect_p.add_argument("payload", metavar="PAYLOAD", help="the QR text, or - to read stdin")
    inspect_p.set_defaults(func=_inspect)

    # Listed for --help only; `scanpay qr scan` is routed to the wallet before argparse.
    scan_p = qr_sub.add_parser(
        "scan", help="decode a QR from a camera or an image file (scanpay qr scan --help)"
    )
    scan_p.set_defaults(func=_scan_elsewhere)


def _no_action(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.qr_parser
    parser.print_help(sys.stderr)
    return 2


def _scan_elsewhere(args: argparse.Namespace) -> int:
    print("run: scanpay qr scan --help", file=sys.stderr)
    return 2


def _inspect(args: argparse.Namespace) -> int:
    from psp_server.domain.qr import inspect

    payload: str = args.payload
    if payload == "-":
        payload = sys.stdin.read(_STDIN_LIMIT)
    result = inspect(payload)
    _print_json(result)
    return 0 if result["valid"] else 1


def _print_json(obj: dict[str, object]) -> None:
    text = json.dumps(obj, ensure_ascii=False)
    try:
        sys.stdout.write(text + "\n")
    except UnicodeEncodeError:  # a terminal that cannot show the merchant's script
        sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
