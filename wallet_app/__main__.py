"""``scanpay wallet``: serve the consumer wallet as a web app (Flet, ``flet-web``, offline).

    scanpay wallet --psp 127.0.0.1:50051 [--host 0.0.0.0] [--port 8550] [--https]
                   [--camera 0|FILE] [--data DIR]

Open the printed URL in a browser; on a phone use ``--host 0.0.0.0 --https`` and the LAN
address (docs/wallet.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flet as ft
import grpc

from wallet_app.camera import CameraHub
from wallet_app.client import GrpcWalletClient, open_channel
from wallet_app.routes import run_session
from wallet_app.tls import ensure_certificate, lan_addresses

log = logging.getLogger("wallet_app")


def default_data_dir() -> Path:
    """``$SCANPAY_DATA/wallet``, else ``$XDG_DATA_HOME/scanpay/wallet`` (or ~/.local/share)."""
    env = os.environ.get("SCANPAY_DATA")
    if env:
        return Path(env) / "wallet"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "scanpay" / "wallet"


def build_app(psp: str, camera: str | None = None) -> Any:
    """The ASGI app: the Flet web client (bundled, no CDN) and one session per browser tab.

    All sessions share one gRPC channel to the PSP, made on the server's event loop the
    first time a browser connects; each session has its own client (its own tokens).
    """
    import flet_web.fastapi as flet_fastapi  # type: ignore[import-untyped]

    hub = CameraHub(camera) if camera else None
    channels: dict[int, grpc.aio.Channel] = {}

    def channel() -> grpc.aio.Channel:
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in channels:
            channels[loop_id] = open_channel(psp)
        return channels[loop_id]

    async def session(page: ft.Page) -> None:
        await run_session(page, GrpcWalletClient(channel()), camera=hub)

    return flet_fastapi.app(
        session,
        no_cdn=True,
        app_name="ScanPay wallet",
        app_short_name="Wallet",
        app_description="Scan a shop's QR code and pay",
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def wallet_urls(host: str, port: int, https: bool) -> list[str]:
    """Where people can open the wallet: loopback first, then the LAN addresses."""
    scheme = "https" if https else "http"
    hosts = ["127.0.0.1", *lan_addresses()] if host in ("", "0.0.0.0", "::") else [host]
    out = []
    for h in hosts:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(h).version == 6:
                h = f"[{h}]"
        out.append(f"{scheme}://{h}:{port}/")
    return out


class WalletServer:
    """The wallet's web server, run blocking (:meth:`run`) or in a thread (:meth:`start`)."""

    def __init__(
        self,
        psp: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8550,
        https: bool = False,
        data_dir: Path | None = None,
        camera: str | None = None,
    ) -> None:
        import uvicorn

        self.data_dir = data_dir or default_data_dir()
        self.https = https
        self._sock = _bind(host, port)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        ssl: dict[str, str] = {}
        if https:
            cert, key = ensure_certificate(self.data_dir)
            ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        config = uvicorn.Config(
            build_app(psp, camera),
            log_level="warning",
            ws="websockets-sansio",
            timeout_graceful_shutdown=2,
            **ssl,  # type: ignore[arg-type]
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def urls(self) -> list[str]:
        return wallet_urls(self.host, self.port, self.https)

    @property
    def url(self) -> str:
        return self.urls[0]

    def run(self) -> None:
        """Serve until interrupted (Ctrl+C)."""
        self._server.run(sockets=[self._sock])

    def start(self, timeout: float = 30.0) -> WalletServer:
        """Serve in a background thread; return once it accepts connections."""
        self._thread = threading.Thread(target=self.run, name="wallet-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the wallet web server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(OSError):
            self._sock.close()


def serve_wallet(
    psp: str,
    host: str,
    port: int,
    https: bool,
    data_dir: Path,
    camera: str | None,
    *,
    out: Callable[[str], Any] = print,
) -> None:
    """Serve the wallet until interrupted, after printing where to open it."""
    server = WalletServer(psp, host=host, port=port, https=https, data_dir=data_dir, camera=camera)
    out(f"ScanPay wallet for PSP {psp}")
    for url in server.urls:
        out(f"  open {url}")
    if https:
        out(f"  (self-signed certificate in {server.data_dir}; accept the browser's warning)")
    elif host not in ("127.0.0.1", "localhost", "::1"):
        out("  phones give the camera only to HTTPS pages: add --https to scan with a phone")
    sys.stdout.flush()
    server.run()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scanpay wallet",
        description="Serve the consumer wallet as a web app (open it in a browser or on a phone).",
    )
    p.add_argument("--psp", required=True, metavar="HOST:PORT", help="the PSP's gRPC address")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8550, help="port to listen on (0: any free)")
    p.add_argument(
        "--https",
        action="store_true",
        help="serve over HTTPS with a self-signed certificate (phones need it for the camera)",
    )
    p.add_argument(
        "--camera",
        metavar="N|FILE",
        help="also scan with a camera on this machine (device number, or a video file)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the certificate is kept (default: $SCANPAY_DATA/wallet)",
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve_wallet(
            psp=args.psp,
            host=args.host,
            port=args.port,
            https=args.https,
            data_dir=args.data or default_data_dir(),
            camera=args.camera,
        )
    except OSError as exc:
        print(f"scanpay wallet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
