"""`scanpay psp serve|migrate|check-migrations`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from psp_server.cli.common import add_db_args, settings_from

# A C event loop on libuv (grpc.aio runs on any asyncio loop); not on every platform.
_HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


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
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT) and the database",
    )
    serve.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop" if _HAVE_UVLOOP else "asyncio",
        help="uvloop (the default where installed: about a tenth less CPU per payment) "
        "or the standard library's loop",
    )
    serve.add_argument(
        "--commit-delay-ms",
        type=float,
        default=None,
        help="under load, how long a small SQLite group commit waits for more payments "
        "(default 2; 0 turns it off; a lone payment never waits)",
    )
    serve.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)
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
    child = bool(args.worker_child)
    workers = max(1, int(args.workers))
    if args.commit_delay_ms is not None:
        if not 0 <= args.commit_delay_ms <= 100:
            print("error: --commit-delay-ms must be between 0 and 100", file=sys.stderr)
            return 2
        settings.commit_delay = args.commit_delay_ms / 1000
    app = build_app(settings, migrate_schema=not child, primary=not child)
    server, port = build_server(app, args.listen)
    await server.start()
    await mark_serving(server)
    await start_background(app, primary=not child, follow_log=workers > 1 or child)
    host = args.listen.rsplit(":", 1)[0]
    if child:
        print(WORKER_READY, flush=True)
    procs = [] if child else _spawn_workers(args, host, port, workers - 1)
    if procs:
        # Announce the port only when every worker serves it: connections made before a
        # worker listens would all land on this process.
        await asyncio.to_thread(_wait_ready, procs)
    if not child:
        extra = f", {workers} worker processes" if workers > 1 else ""
        print(
            f"psp listening on {host}:{port} (db {_safe_url(settings.db_url)}{extra})",
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if not child:
        print("psp stopping", flush=True)
    for proc in procs:
        proc.terminate()
    await server.stop(grace=5)
    await stop_background(app)
    app.close()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


def _spawn_workers(
    args: argparse.Namespace, host: str, port: int, n: int
) -> list[subprocess.Popen[bytes]]:
    """More server processes on the same port: the kernel spreads connections over them
    (SO_REUSEPORT), each has its own interpreter lock, and they share the database."""
    procs = []
    for _ in range(n):
        cmd = [
            sys.executable,
            "-m",
            "psp_server",
            "psp",
            "serve",
            "--worker-child",
            "--workers",
            str(args.workers),
            "--listen",
            f"{host}:{port}",
            "--event-loop",
            args.event_loop,
        ]
        if args.data is not None:
            cmd += ["--data", str(args.data)]
        if args.db:
            cmd += ["--db", args.db]
        if args.public_url:
            cmd += ["--public-url", args.public_url]
        if args.commit_delay_ms is not None:
            cmd += ["--commit-delay-ms", str(args.commit_delay_ms)]
        if args.cardnet:
            cmd += ["--cardnet", args.cardnet]
        if args.settlement_dir is not None:
            cmd += ["--settlement-dir", str(args.settlement_dir)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=_die_with_parent))
    return procs


WORKER_READY = "psp worker ready"


def _wait_ready(procs: list[subprocess.Popen[bytes]], timeout: float = 120.0) -> None:
    """Block until each worker printed its ready line; then stop reading its output."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        assert proc.stdout is not None
        while True:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                raise SystemExit("a worker process did not start in time")
            line = proc.stdout.readline()
            if not line:
                raise SystemExit(f"a worker process exited while starting (status {proc.wait()})")
            if line.decode(errors="replace").strip() == WORKER_READY:
                break
        # Nothing else is read from it: keep its pipe from filling up.
        threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()


def _drain(stream: IO[bytes]) -> None:
    for _ in iter(stream.readline, b""):
        pass


def _die_with_parent() -> None:
    """In a worker (Linux): get SIGTERM when the first process dies, even by SIGKILL, so
    no orphaned worker keeps serving the port."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.event_loop == "uvloop":
        import uvloop

        return uvloop.run(serve(args))
    return asyncio.run(serve(args))
