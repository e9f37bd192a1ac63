"""`scanpay demo`: the whole shop on one machine.

Starts the PSP (SQLite in a data directory), seeds a demo shop, till and consumer with a
balance, starts the wallet web app and opens the till in the foreground. ``--headless``
plays one full sale without a screen instead (create a QR, draw it, pay it as the
consumer, see the merchant's event) and exits 0 only if every step worked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psp_server.cli.psp import _die_with_parent
from psp_server.config import default_data_dir

DEMO_PASSWORD = "demo-password"
DEMO_EMAIL = "alex@example.com"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run the whole shop: PSP, till and wallet (or --headless: one sale)"
    )
    p.add_argument("--headless", action="store_true", help="play one sale without a screen")
    p.add_argument("--data", type=Path, default=None, help="data directory (default: <data>/demo)")
    p.add_argument("--psp-port", type=int, default=50051)
    p.add_argument("--wallet-port", type=int, default=8550)
    p.add_argument("--no-wallet", action="store_true", help="do not start the wallet web app")
    p.set_defaults(func=_demo)


@dataclass
class DemoShop:
    merchant_id: str
    terminal_id: str
    api_key: str
    consumer_email: str
    consumer_password: str


def seed(data: Path, db_url: str) -> DemoShop:
    """Create the demo shop once; later runs reuse it (the API key is kept in the data
    directory, as a till would keep it)."""
    from psp_server.bootstrap import build_app
    from psp_server.config import Settings

    path = data / "demo-shop.json"
    app = build_app(Settings(data_dir=data, db_url=db_url))
    try:
        if path.exists():
            shop = DemoShop(**json.loads(path.read_text()))
            if any(m.id == shop.merchant_id for m in app.admin.list_merchants()):
                _top_up_if_low(app, shop)
                return shop
        m = app.admin.create_merchant(
            name="Corner Bakery", city="Berlin", country="DE", currency="EUR", mcc="5462"
        )
        t = app.admin.create_terminal(m.id, "Till 1")
        email = DEMO_EMAIL
        try:
            app.admin.create_consumer(
                email=email,
                password=DEMO_PASSWORD,
                currency="EUR",
                kyc_tier=2,
                display_name="Alex",
            )
        except Exception:  # exists from an earlier demo on this data
            email = f"alex+{uuid.uuid4().hex[:6]}@example.com"
            app.admin.create_consumer(
                email=email,
                password=DEMO_PASSWORD,
                currency="EUR",
                kyc_tier=2,
                display_name="Alex",
            )
        app.admin.set_fx_rate("EUR", "USD", "1.08")
        app.admin.set_fx_rate("EUR", "JPY", "162")
        shop = DemoShop(m.id, t.terminal.id, t.api_key, email, DEMO_PASSWORD)
        _top_up_if_low(app, shop)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(shop), indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return shop
    finally:
        app.close()


def _top_up_if_low(app: Any, shop: DemoShop) -> None:
    from psp_server.domain import ledger

    c = app.admin.find_consumer(shop.consumer_email)
    bal = app.db.read_sync(lambda s: s.balance(ledger.wallet(c.id, c.currency)))
    if bal < 100_00:
        app.admin.top_up(c.id, 250_00 - bal, "EUR")


def _start(cmd: list[str], prefix: str, log_path: Path) -> tuple[subprocess.Popen[str], str]:
    log = open(log_path, "a")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=_die_with_parent
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{cmd[3]} did not start; see {log_path}")
        if line.startswith(prefix):
            return proc, line.split()[3]
    raise RuntimeError(f"{cmd[3]} did not start in time; see {log_path}")


def start_cardnet(data: Path) -> tuple[subprocess.Popen[str], str]:
    """The card-network + issuer simulator, as its own process."""
    return _start(
        [
            sys.executable,
            "-m",
            "psp_server",
            "cardnet",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            str(data / "cardnet"),
        ],
        "cardnet listening on",
        data / "cardnet.log",
    )


def start_psp(
    data: Path, db_url: str, port: int, cardnet: str = ""
) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "psp_server",
        "psp",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--data",
        str(data),
        "--db",
        db_url,
    ]
    if cardnet:
        cmd += ["--cardnet", cardnet, "--settlement-dir", str(data / "cardnet" / "settlement")]
    return _start(cmd, "psp listening on ", data / "psp.log")


def half_blocks(payload: str, color: bool = True) -> list[str]:
    """The QR as text: each character cell is two modules, upper half block with
    foreground = upper module and background = lower module (ANSI colours). Without
    colour (a log file), dark modules are drawn with block characters."""
    import qrcode

    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    code.add_data(payload)
    code.make(fit=True)
    m = code.get_matrix()
    if len(m) % 2:
        m.append([False] * len(m[0]))
    fg = {True: "30", False: "97"}
    bg = {True: "40", False: "107"}
    lines = []
    if not color:
        glyph = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
        for y in range(0, len(m), 2):
            lines.append("".join(glyph[m[y][x], m[y + 1][x]] for x in range(len(m[0]))))
        return lines
    for y in range(0, len(m), 2):
        cells = [f"\x1b[{fg[m[y][x]]};{bg[m[y + 1][x]]}m▀" for x in range(len(m[0]))]
        lines.append("".join(cells) + "\x1b[0m")
    return lines


def play_sale(address: str, shop: DemoShop, out: Any = sys.stdout, card: bool = False) -> bool:
    """One sale, end to end over gRPC, printing each step. True when all worked."""
    import grpc

    from protos.scanpay.v1 import (
        common_pb2,
        merchant_pb2,
        merchant_pb2_grpc,
        wallet_pb2,
        wallet_pb2_grpc,
    )

    ok = True

    def step(name: str, good: bool, detail: str = "") -> None:
        nonlocal ok
        ok = ok and good
        mark = "ok " if good else "FAIL"
        print(f"[{mark}] {name}{(': ' + detail) if detail else ''}", file=out, flush=True)

    mmd = (("authorization", f"Bearer {shop.api_key}"),)
    with grpc.insecure_channel(address) as ch:
        merchant = merchant_pb2_grpc.MerchantServiceStub(ch)
        wallet = wallet_pb2_grpc.WalletServiceStub(ch)
        info = merchant.GetMerchant(merchant_pb2.GetMerchantRequest(), metadata=mmd)
        step("till signed in", True, f"{info.name}, {info.city} ({info.terminal_label})")
        # The merchant's stream, from its current end.
        events = merchant.WatchPayments(
            merchant_pb2.WatchPaymentsRequest(after_cursor=""), metadata=mmd, timeout=30
        )
        order = f"DEMO-{uuid.uuid4().hex[:6].upper()}"
        t0 = time.perf_counter()
        p = merchant.CreatePayment(
            merchant_pb2.CreatePaymentRequest(
                order_id=order,
                amount=common_pb2.Money(amount_minor=12_50, currency="EUR"),
                description="2 croissants, 1 coffee",
                idempotency_key=uuid.uuid4().hex,
            ),
            metadata=mmd,
        )
        ms = (time.perf_counter() - t0) * 1000
        step(
            "QR created",
            p.status == common_pb2.PAYMENT_STATUS_PENDING,
            f"{p.id} for 12.50 EUR in {ms:.1f} ms, {len(p.qr_payload)} chars",
        )
        for line in half_blocks(p.qr_payload, color=out.isatty()):
            print("   " + line, file=out)
        print(f"   payload: {p.qr_payload}", file=out, flush=True)
        s = wallet.Login(
            wallet_pb2.LoginRequest(email=shop.consumer_email, password=shop.consumer_password)
        )
        wmd = (("authorization", f"Bearer {s.access_token}"),)
        before = wallet.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=wmd).available
        step(
            "consumer signed in",
            True,
            f"{s.consumer.email}, balance {before.amount_minor / 100:.2f} EUR",
        )
        q = wallet.ResolveQr(wallet_pb2.ResolveQrRequest(payload=p.qr_payload), metadata=wmd)
        step(
            "wallet read the QR",
            q.payable and q.merchant.name == info.name,
            f"verified merchant {q.merchant.name!r}, "
            f"{q.amount.amount_minor / 100:.2f} {q.amount.currency}"
            + (f", warnings {[w.code for w in q.warnings]}" if q.warnings else ""),
        )
        t1 = time.perf_counter()
        r = wallet.Pay(
            wallet_pb2.PayRequest(quote_id=q.quote_id, idempotency_key=uuid.uuid4().hex),
            metadata=wmd,
        )
        step(
            "paid",
            r.payment_id == p.id,
            f"{r.transaction_id}, balance now {r.balance_after.amount_minor / 100:.2f} EUR",
        )
        got = None
        try:
            for ev in events:
                if ev.payment.id == p.id and ev.type == merchant_pb2.PAYMENT_EVENT_TYPE_SUCCEEDED:
                    got = ev
                    break
        finally:
            events.cancel()
        lag = (time.perf_counter() - t1) * 1000
        step(
            "merchant told",
            got is not None,
            f"event {got.cursor} SUCCEEDED {lag:.1f} ms after the tap" if got else "no event",
        )
        after = wallet.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=wmd).available
        step("balance dropped by 12.50", before.amount_minor - after.amount_minor == 12_50)
        if card:
            # What a USB magstripe reader types for the simulator's approving test card.
            track = (
                "%B4111111111111111^DEMO/ALEX^3012101000000000000?"
                ";4111111111111111=30121010000000000000?"
            )
            t2 = time.perf_counter()
            cp = merchant.SwipeCard(
                merchant_pb2.SwipeCardRequest(
                    track_data=track,
                    amount=common_pb2.Money(amount_minor=8_90, currency="EUR"),
                    order_id=f"CARD-{uuid.uuid4().hex[:6].upper()}",
                    action=merchant_pb2.CARD_ACTION_SALE,
                    idempotency_key=uuid.uuid4().hex,
                ),
                metadata=mmd,
            )
            step(
                "card swipe approved",
                cp.status == common_pb2.PAYMENT_STATUS_SUCCEEDED,
                f"{cp.card.brand} {cp.card.pan_masked}, auth {cp.card.auth_code}, "
                f"{(time.perf_counter() - t2) * 1000:.0f} ms through the card network",
            )
    return ok


def _demo(args: argparse.Namespace) -> int:
    data: Path = args.data or default_data_dir() / "demo"
    data.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{data / 'psp.db'}"
    print(f"data directory: {data}", flush=True)
    shop = seed(data, db_url)
    port = 0 if args.headless else args.psp_port
    children: list[subprocess.Popen[str]] = []
    try:
        cardnet_proc, cardnet = start_cardnet(data)
        children.append(cardnet_proc)
        psp, address = start_psp(data, db_url, port, cardnet)
        children.append(psp)
    except RuntimeError as exc:
        for proc in children:
            proc.terminate()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"card network simulator on {cardnet}; PSP listening on {address}", flush=True)
        if args.headless:
            ok = play_sale(address, shop, card=True)
            print("demo sale: " + ("all steps succeeded" if ok else "FAILED"), flush=True)
            return 0 if ok else 1
        if not args.no_wallet:
            wallet = _start_wallet(address, data, args.wallet_port)
            if wallet is not None:
                children.append(wallet)
        print(f"consumer: {shop.consumer_email} / {shop.consumer_password}", flush=True)
        return _run_till(address, shop, data)
    finally:
        for proc in reversed(children):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _start_wallet(address: str, data: Path, port: int) -> subprocess.Popen[str] | None:
    try:
        import wallet_app.__main__  # noqa: F401
    except ImportError:
        print("(the wallet app is not available in this build)")
        return None
    log = open(data / "wallet.log", "a")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "psp_server",
            "wallet",
            "--psp",
            address,
            "--port",
            str(port),
            "--data",
            str(data / "wallet"),
        ],
        stdout=log,
        stderr=log,
        text=True,
        preexec_fn=_die_with_parent,
    )
    print(f"wallet: http://127.0.0.1:{port}  (log: {data / 'wallet.log'})", flush=True)
    return proc


def _run_till(address: str, shop: DemoShop, data: Path) -> int:
    try:
        from pos_terminal.__main__ import run_till
    except ImportError:
        print("(the till is not available in this build; playing one sale instead)")
        return 0 if play_sale(address, shop) else 1
    return int(run_till(address, shop.api_key, data / "till"))
