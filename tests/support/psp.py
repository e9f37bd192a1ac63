"""A real PSP for tests: the grpc.aio server on 127.0.0.1 (a free port) over a real
database, in a background thread with its own event loop, so it lives beside Textual's
or pytest-asyncio's loop. ``PspProcess`` runs it as a separate OS process instead."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from protos.scanpay.v1 import (
    common_pb2,
    merchant_pb2,
    merchant_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from psp_server.config import Settings
from psp_server.service.clock import OffsetClock

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class MerchantCreds:
    merchant_id: str
    terminal_id: str
    api_key: str


class LivePsp:
    def __init__(
        self,
        data_dir: Path,
        db_url: str | None = None,
        *,
        settings: Settings | None = None,
        cardnet: str | None = None,
        gateway: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        # As ``psp serve --gateways``: clients talk to a gateway (its own app on the same
        # database) that hands every unary call to the core over a Unix socket.
        self.gateway = gateway
        self.gateway_app: Any = None
        self.core: Any = None  # the core's end of the relay, in gateway mode
        self.cardnet = cardnet
        self.db_url = db_url or f"sqlite:///{self.data_dir / 'psp.db'}"
        self.settings = settings
        self.address = ""
        self.port = 0
        self.app: Any = None
        # Shared by every restart; tests move time with ``psp.clock.advance(...)``.
        self.clock = OffsetClock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._secret = b"test-secret-" + uuid.uuid4().hex.encode()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> LivePsp:
        from psp_server.api.server import build_server, mark_serving, start_core, start_gateway
        from psp_server.bootstrap import build_app, start_background, stop_background

        settings = self.settings or Settings(data_dir=self.data_dir, db_url=self.db_url)
        settings.db_url = self.db_url
        settings.secret = self._secret
        settings.sweep_interval = 0.2
        if self.cardnet is not None:
            settings.cardnet = self.cardnet
        self.app = build_app(settings, clock=self.clock)
        ready: Future[int] = Future()
        loop = asyncio.new_event_loop()
        self._loop = loop

        if self.gateway:
            gw_settings = Settings(data_dir=self.data_dir, db_url=self.db_url)
            gw_settings.secret = self._secret
            self.gateway_app = build_app(
                gw_settings, clock=self.clock, migrate_schema=False, primary=False
            )

        async def main() -> None:
            address = f"127.0.0.1:{self.port or 0}"
            core = client = None
            if self.gateway:
                sock = str(self.data_dir / "core.sock")
                core = self.core = await start_core(self.app, sock)
                server, port, client = await start_gateway(self.gateway_app, address, sock)
            else:
                server, port = build_server(self.app, address)
                await server.start()
                await mark_serving(server)
            await start_background(self.app)
            self._server = server
            self._stopping = asyncio.Event()
            ready.set_result(port)
            await self._stopping.wait()
            await server.stop(grace=0.5)
            if client is not None and core is not None:
                client.close()
                await core.stop()
            await stop_background(self.app)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(main())
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
            finally:
                pending = asyncio.all_tasks(loop)
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="live-psp", daemon=True)
        self._thread.start()
        self.port = ready.result(timeout=30)
        self.address = f"127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        assert self._thread is not None
        self._thread.join(timeout=30)
        self.app.close()
        if self.gateway_app is not None:
            self.gateway_app.close()
            self.gateway_app = None
        self._server = None
        self._loop = None

    def restart(self) -> LivePsp:
        """Stop and start again on the same database and port (a server restart)."""
        self.stop()
        return self.start()

    def __enter__(self) -> LivePsp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- seeding (operator actions, straight through the admin services) -----------------

    def create_merchant(
        self,
        name: str = "Corner Bakery",
        city: str = "Berlin",
        country: str = "DE",
        currency: str = "EUR",
        mcc: str = "5462",
        label: str = "Till 1",
        discount_rate_bps: int | None = None,
    ) -> MerchantCreds:
        m = self.app.admin.create_merchant(
            name=name,
            city=city,
            country=country,
            currency=currency,
            mcc=mcc,
            discount_rate_bps=discount_rate_bps,
        )
        t = self.app.admin.create_terminal(m.id, label)
        return MerchantCreds(m.id, t.terminal.id, t.api_key)

    def create_consumer(
        self,
        email: str,
        password: str = "correct horse",
        currency: str = "EUR",
        kyc_tier: int = 2,
        balance_minor: int = 100_00,
    ) -> str:
        c = self.app.admin.create_consumer(
            email=email, password=password, currency=currency, kyc_tier=kyc_tier
        )
        if balance_minor:
            self.app.admin.top_up(c.id, balance_minor, currency)
        return str(c.id)

    def set_fx(self, base: str, quote: str, rate: str) -> None:
        self.app.admin.set_fx_rate(base, quote, rate)

    # -- convenience clients (synchronous, over real gRPC) ----------------------------

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def merchant_stub(self) -> merchant_pb2_grpc.MerchantServiceStub:
        return merchant_pb2_grpc.MerchantServiceStub(self.channel())

    def wallet_stub(self) -> wallet_pb2_grpc.WalletServiceStub:
        return wallet_pb2_grpc.WalletServiceStub(self.channel())

    def create_payment(
        self,
        api_key: str,
        amount_minor: int,
        order_id: str | None = None,
        currency: str = "EUR",
        expires_in_seconds: int = 0,
    ) -> tuple[str, str]:
        with self.channel() as ch:
            p = merchant_pb2_grpc.MerchantServiceStub(ch).CreatePayment(
                merchant_pb2.CreatePaymentRequest(
                    order_id=order_id or f"ORDER-{uuid.uuid4().hex[:8].upper()}",
                    amount=common_pb2.Money(amount_minor=amount_minor, currency=currency),
                    expires_in_seconds=expires_in_seconds,
                    idempotency_key=uuid.uuid4().hex,
                ),
                metadata=bearer(api_key),
            )
        return p.id, p.qr_payload

    def static_qr(self, api_key: str) -> str:
        with self.channel() as ch:
            s = merchant_pb2_grpc.MerchantServiceStub(ch).GetStaticQr(
                merchant_pb2.GetStaticQrRequest(), metadata=bearer(api_key)
            )
        return s.qr_payload

    def login(self, email: str, password: str = "correct horse") -> str:
        with self.channel() as ch:
            s = wallet_pb2_grpc.WalletServiceStub(ch).Login(
                wallet_pb2.LoginRequest(email=email, password=password)
            )
        return s.access_token

    def wallet_pay(
        self,
        email: str,
        password: str = "correct horse",
        payload: str = "",
        amount_minor: int | None = None,
        currency: str = "EUR",
    ) -> wallet_pb2.Receipt:
        """Pay a QR as a consumer would: sign in, resolve, pay."""
        token = self.login(email, password)
        md = bearer(token)
        with self.channel() as ch:
            stub = wallet_pb2_grpc.WalletServiceStub(ch)
            amount = (
                common_pb2.Money(amount_minor=amount_minor, currency=currency)
                if amount_minor is not None
                else None
            )
            q = stub.ResolveQr(
                wallet_pb2.ResolveQrRequest(payload=payload, amount=amount), metadata=md
            )
            return stub.Pay(
                wallet_pb2.PayRequest(quote_id=q.quote_id, idempotency_key=uuid.uuid4().hex),
                metadata=md,
            )

    def balance_minor(self, email: str, password: str = "correct horse") -> int:
        with self.channel() as ch:
            b = wallet_pb2_grpc.WalletServiceStub(ch).GetBalance(
                wallet_pb2.GetBalanceRequest(), metadata=bearer(self.login(email, password))
            )
        return b.available.amount_minor

    def watch_events(
        self,
        api_key: str,
        after_cursor: str = "",
        until_count: int | None = None,
        timeout: float = 5.0,
    ) -> list[tuple[str, str, str]]:
        """Read the merchant's event stream: [(cursor, type name, payment id)]. Stops after
        ``until_count`` events, or when nothing new arrives for ``timeout`` seconds."""
        out: list[tuple[str, str, str]] = []
        with self.channel() as ch:
            call = merchant_pb2_grpc.MerchantServiceStub(ch).WatchPayments(
                merchant_pb2.WatchPaymentsRequest(after_cursor=after_cursor),
                metadata=bearer(api_key),
                timeout=timeout,
            )
            try:
                for ev in call:
                    out.append(
                        (ev.cursor, merchant_pb2.PaymentEventType.Name(ev.type), ev.payment.id)
                    )
                    if until_count is not None and len(out) >= until_count:
                        call.cancel()
                        break
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                    raise
        return out


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


class PspProcess:
    """``scanpay psp serve`` as its own OS process (for crash and restart tests)."""

    def __init__(
        self,
        data_dir: Path,
        db_url: str | None = None,
        port: int = 0,
        workers: int = 1,
        gateways: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.db_url = db_url or f"sqlite:///{self.data_dir / 'psp.db'}"
        self.port = port
        self.workers = workers
        self.gateways = gateways
        self._drainer: threading.Thread | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""

    def start(self, timeout: float = 60) -> PspProcess:
        env = dict(os.environ, SCANPAY_SECRET="process-test-secret", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "psp_server",
                "psp",
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data",
                str(self.data_dir),
                "--db",
                self.db_url,
                "--workers",
                str(self.workers),
                *(["--gateways", str(self.gateways)] if self.gateways else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"psp exited with {self.proc.wait()}")
            if line.startswith("psp listening on "):
                self.address = line.split()[3]
                self.port = int(self.address.rsplit(":", 1)[1])
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return self
        raise TimeoutError("psp did not start")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_pipe()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._drainer is not None:
            self._drainer.join(timeout=10)
            self._drainer = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
