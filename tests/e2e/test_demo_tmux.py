"""``scanpay demo`` the way a person runs it: in a real terminal (tmux, 80x24). The till
comes up in the foreground against the PSP the demo started; the cashier types an amount
and presses Enter; the QR shows; the consumer pays; the till says PAID; Ctrl+Q quits and
takes the PSP, the card network and the wallet with it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from protos.scanpay.v1 import merchant_pb2, merchant_pb2_grpc, wallet_pb2, wallet_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)  # polling a terminal: there is nothing to wait on
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[str, Path, int, int]]:
    name = f"demo-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "demo"
    psp_port = free_port()
    wallet_port = free_port()
    cmd = (
        f"{sys.executable} -m psp_server demo --data {data} --psp-port {psp_port} "
        f"--wallet-port {wallet_port}"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "24", cmd],
        check=True,
        cwd=ROOT,
    )
    try:
        yield name, data, psp_port, wallet_port
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def screen(name: str) -> str:
    out = subprocess.run(["tmux", "capture-pane", "-t", name, "-p"], capture_output=True, text=True)
    return out.stdout


def keys(name: str, *k: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", name, *k], check=True)


def demo_processes(data: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(data)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


def wallet_serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_demo_opens_the_till_and_a_sale_turns_paid(
    session: tuple[str, Path, int, int],
) -> None:
    name, data, psp_port, wallet_port = session
    until(lambda: "Amount" in screen(name) and "live" in screen(name), "the till")
    keys(name, "12.50", "Enter")
    until(lambda: "▀" in screen(name), "the QR on the checkout screen")
    assert "SCAN TO PAY" in screen(name)
    assert "12.50 EUR" in screen(name)

    shop = json.loads((data / "demo-shop.json").read_text())
    with grpc.insecure_channel(f"127.0.0.1:{psp_port}") as ch:
        md = (("authorization", f"Bearer {shop['api_key']}"),)
        p = (
            merchant_pb2_grpc.MerchantServiceStub(ch)
            .ListPayments(merchant_pb2.ListPaymentsRequest(page_size=1), metadata=md)
            .payments[0]
        )
        ws = wallet_pb2_grpc.WalletServiceStub(ch)
        s = ws.Login(
            wallet_pb2.LoginRequest(
                email=shop["consumer_email"], password=shop["consumer_password"]
            )
        )
        wmd = (("authorization", f"Bearer {s.access_token}"),)
        q = ws.ResolveQr(wallet_pb2.ResolveQrRequest(payload=p.qr_payload), metadata=wmd)
        ws.Pay(
            wallet_pb2.PayRequest(quote_id=q.quote_id, idempotency_key=uuid.uuid4().hex),
            metadata=wmd,
        )
    until(lambda: "PAID" in screen(name) and p.id in screen(name), "PAID on the till")

    until(lambda: wallet_serves(wallet_port), "the wallet web app the demo started")

    keys(name, "C-q")
    until(lambda: not demo_processes(data), "the demo and its servers to exit", timeout=30)
