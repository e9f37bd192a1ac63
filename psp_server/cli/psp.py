"""`scanpay psp serve|migrate|check-migrations`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from psp_server.cli.common import add_db_args, settings_from


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("psp", help="run the PSP server")
    psub = p.add_subparsers(dest="psp_command", required=True, metavar="COMMAND")
    serve = psub.add_parser("serve", help="serve gRPC (migrates the database first)")
    serve.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT (port 0: any free)")
    serve.add_argument("--public-url", default="", help="base URL for pay links")
    serve.add_argument(
        "--cardnet",
        default="",
        metavar="HOST:PORT",
        help="the card network (default $SCANPAY_CARDNET; none: card RPCs are unavailable)",
    )
    serve.add_argument(
        "--settlement-dir",
        type=Path,
        default=None,
        help="where the card network drops settlement files (default $SCANPAY_SETTLEMENT_DIR)",
    )
    add_db_args(serve)
    serve.set_defaults(func=_serve)
    mig = psub.add_parser("migrate", help="bring the database schema up to date")
    add_db_args(mig)
    mig.set_defaults(func=_migrate)
    chk = psub.add_parser("check-migrations", help="fail if migrations and tables disagree")
    chk.set_defaults(func=_check)


def _migrate(args: argparse.Namespace) -> int:
    from psp_server.adapters import migrate

    settings = settings_from(args)
    migrate.upgrade(settings.db_url)
    print(f"database is up to date: {_safe_url(settings.db_url)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from psp_server.adapters import migrate

    migrate.check()
    print("migrations match the tables")
    return 0


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


async def serve(args: argparse.Namespace) -> int:
    from psp_server.api.server import build_server, mark_serving
    from psp_server.bootstrap import build_app, start_background, stop_background

    settings = settings_from(args)
    if args.public_url:
        settings.public_base_url = args.public_url
    settings.listen = args.listen
    if args.cardnet:
        settings.cardnet = args.cardnet
    if args.settlement_dir is not None:
        settings.settlement_dir = args.settlement_dir
    app = build_app(settings)
    server, port = build_server(app, args.listen)
    await server.start()
    await mark_serving(server)
    await start_background(app)
    host = args.listen.rsplit(":", 1)[0]
    print(f"psp listening on {host}:{port} (db {_safe_url(settings.db_url)})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("psp stopping", flush=True)
    await server.stop(grace=5)
    await stop_background(app)
    app.close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(serve(args))
