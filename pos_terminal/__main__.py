"""``scanpay till``: the cashier terminal.

    scanpay till --psp HOST:PORT --key API_KEY [--data DIR]

The key and address may also come from ``SCANPAY_TILL_KEY`` / ``SCANPAY_PSP`` or from
``config.json`` in the data directory, written after the first successful connection.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pos_terminal import config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scanpay till",
        description="The cashier terminal: QR and card checkout, history, end of day.",
    )
    parser.add_argument("--psp", metavar="HOST:PORT", help="the PSP's gRPC address")
    parser.add_argument("--key", metavar="API_KEY", help="this terminal's API key")
    parser.add_argument(
        "--data",
        metavar="DIR",
        type=Path,
        help="where the till keeps its journal and config "
        "(default $SCANPAY_DATA/till or ~/.local/share/scanpay/till)",
    )
    return parser


def run_till(psp: str, key: str, data_dir: Path) -> int:
    """Run the till full screen until the cashier quits; returns the exit status."""
    from pos_terminal.app import PosApp
    from pos_terminal.client import GrpcPspClient

    data_dir = Path(data_dir)

    def remember_config(_merchant: object) -> None:
        config.save(config.TillConfig(psp=psp, key=key, data_dir=data_dir))

    app = PosApp(GrpcPspClient(psp, key), data_dir, psp_address=psp, on_connected=remember_config)
    result = app.run()
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    psp, key, data_dir = config.resolve(args.psp, args.key, args.data)
    if not key:
        print(
            "scanpay till: no API key. Pass --key, set SCANPAY_TILL_KEY, or connect once "
            f"so that {data_dir / config.CONFIG_NAME} holds it.",
            file=sys.stderr,
        )
        return 2
    return run_till(psp, key, data_dir)


if __name__ == "__main__":
    raise SystemExit(main())
