"""`scanpay psp serve|migrate|check-migrations`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
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
    serve.add_argument(
        "--gateways",
        type=int,
        default=0,
        help="processes that hold the gRPC connections and hand each call to this one, "
        "which alone runs the payments and owns the database (0: this process serves "
        "gRPC itself)",
    )
    serve.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--gateway-child", default="", help=argparse.SUPPRESS)
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
    if args.gateway_child:
        return await _serve_gateway(args, settings)
    gateways = int(args.gateways)
    if gateways < 0 or gateways > 64:
        print("error: --gateways must be between 0 and 64", file=sys.stderr)
        return 2
    if gateways and workers > 1:
        print("error: --gateways and --workers do not combine", file=sys.stderr)
        return 2
    app = build_app(settings, migrate_schema=not child, primary=not child)
    if gateways:
        return await _serve_core(args, app, gateways)
    server, port = build_server(app, args.listen)
    await server.start()
    await mark_serving(server)
    await start_background(app, primary=not child, follow_log=workers > 1 or child)
    host = args.listen.rsplit(":", 1)[0]
    if child:
        print(f"{WORKER_READY} {port}", flush=True)
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
    await _signalled().wait()
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


def _signalled() -> asyncio.Event:
    """Set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve_core(args: argparse.Namespace, app: Any, n: int) -> int:
    """The core (``--gateways N``): runs every call its gateways hand it, on the one
    database writer, and sends each committed event to them (api/relay.py)."""
    from psp_server.api.server import start_core
    from psp_server.bootstrap import start_background, stop_background

    # Linux: a socket in the abstract namespace ("@name" on a command line), which leaves
    # nothing behind when the core is killed; elsewhere a file in a private directory.
    sock_dir = "" if sys.platform == "linux" else tempfile.mkdtemp(prefix="scanpay-core-")
    name = f"@scanpay-core-{os.getpid()}-{secrets.token_hex(6)}"
    path = os.path.join(sock_dir, "core.sock") if sock_dir else name
    core = await start_core(app, path)
    await start_background(app, primary=True)
    gateways = _Gateways(args, path)
    try:
        port = await gateways.start(n)
        host = args.listen.rsplit(":", 1)[0]
        print(
            f"psp listening on {host}:{port} (db {_safe_url(app.settings.db_url)}, "
            f"{n} gateway processes)",
            flush=True,
        )
        stop = _signalled()
        watch = asyncio.create_task(gateways.keep_up(stop))
        await stop.wait()
        print("psp stopping", flush=True)
        watch.cancel()
        # Gateways first (they finish their calls in flight), then the core.
        await asyncio.to_thread(gateways.stop)
    finally:
        gateways.kill()
        await core.stop()
        await stop_background(app)
        app.close()
        if sock_dir:
            shutil.rmtree(sock_dir, ignore_errors=True)
    return 0


class _Gateways:
    """The core's gateway processes: started on one port, started again if one dies."""

    def __init__(self, args: argparse.Namespace, path: str) -> None:
        self._args = args
        self._path = path
        self._listen = args.listen
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = _child_command(self._args, self._listen, ["--gateway-child", self._path])
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=_die_with_parent)

    async def start(self, n: int) -> int:
        """Start ``n`` gateways; the first one picks the port when it is 0."""
        first = self._spawn()
        self.procs.append(first)
        (port,) = await asyncio.to_thread(_wait_ready, [first])
        host = self._listen.rsplit(":", 1)[0]
        self._listen = f"{host}:{port}"
        rest = [self._spawn() for _ in range(n - 1)]
        self.procs.extend(rest)
        await asyncio.to_thread(_wait_ready, rest)
        return port

    async def keep_up(self, stop: asyncio.Event) -> None:
        """A gateway that dies is started again: its clients reconnect to the others
        meanwhile, and calls it had in flight finish in the core (their callers retry with
        the same idempotency key)."""
        while not stop.is_set():
            await asyncio.sleep(0.5)
            for i, proc in enumerate(self.procs):
                if proc.poll() is None or stop.is_set():
                    continue
                logging.getLogger(__name__).warning(
                    "gateway process %d exited with status %s; starting another",
                    proc.pid,
                    proc.returncode,
                )
                fresh = self._spawn()
                self.procs[i] = fresh
                try:
                    await asyncio.to_thread(_wait_ready, [fresh])
                except SystemExit as exc:
                    logging.getLogger(__name__).error("gateway did not start: %s", exc)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()


async def _serve_gateway(args: argparse.Namespace, settings: Any) -> int:
    """A gateway: gRPC on the shared port, every unary call handed to the core;
    ``WatchPayments`` served here from the log and the core's events."""
    from psp_server.api.server import start_gateway
    from psp_server.bootstrap import build_app

    settings.cardnet = ""  # the card rail lives in the core
    app = build_app(settings, migrate_schema=False, primary=False)
    server, port, core = await start_gateway(app, args.listen, args.gateway_child)
    print(f"{WORKER_READY} {port}", flush=True)
    stop = _signalled()
    stopped = asyncio.create_task(stop.wait())
    lost = asyncio.create_task(core.closed.wait())
    await asyncio.wait((stopped, lost), return_when=asyncio.FIRST_COMPLETED)
    if lost.done() and not stop.is_set():
        logging.getLogger(__name__).error("gateway: the core is gone; stopping")
    await server.stop(grace=5)
    core.close()
    app.close()
    return 0 if stop.is_set() else 1


def _child_command(args: argparse.Namespace, listen: str, role: list[str]) -> list[str]:
    """``psp serve`` for a child process (a worker or a gateway) on ``listen``, with this
    process's settings."""
    cmd = [sys.executable, "-m", "psp_server", "psp", "serve", *role, "--listen", listen]
    cmd += ["--event-loop", args.event_loop]
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    if args.db:
        cmd += ["--db", args.db]
    if args.public_url:
        cmd += ["--public-url", args.public_url]
    return cmd


def _spawn_workers(
    args: argparse.Namespace, host: str, port: int, n: int
) -> list[subprocess.Popen[bytes]]:
    """More server processes on the same port: the kernel spreads connections over them
    (SO_REUSEPORT), each has its own interpreter lock, and they share the database."""
    procs = []
    for _ in range(n):
        role = ["--worker-child", "--workers", str(args.workers)]
        cmd = _child_command(args, f"{host}:{port}", role)
        if args.commit_delay_ms is not None:
            cmd += ["--commit-delay-ms", str(args.commit_delay_ms)]
        if args.cardnet:
            cmd += ["--cardnet", args.cardnet]
        if args.settlement_dir is not None:
            cmd += ["--settlement-dir", str(args.settlement_dir)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=_die_with_parent))
    return procs


WORKER_READY = "psp worker ready"


def _wait_ready(procs: list[subprocess.Popen[bytes]], timeout: float = 120.0) -> list[int]:
    """Block until each worker printed its ready line; then stop reading its output.
    Returns the ports they listen on."""
    deadline = time.monotonic() + timeout
    ports = []
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
            text = line.decode(errors="replace").strip()
            if text.startswith(WORKER_READY + " "):
                ports.append(int(text.rsplit(" ", 1)[1]))
                break
        # Nothing else is read from it: keep its pipe from filling up.
        threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
    return ports


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
