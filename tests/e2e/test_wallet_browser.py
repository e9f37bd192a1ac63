"""The wallet as people use it: the real PSP, the wallet's web server, headless Chromium.

Chromium's fake camera plays a video of a QR code the PSP really issued; the wallet takes
pictures through ``flet-camera`` until it decodes one, the consumer confirms and pays, and
the merchant's ``WatchPayments`` stream sees the payment. One Chromium for the module.
"""

from __future__ import annotations

import io
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import qrcode

from tests.support.psp import LivePsp, MerchantCreds

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
EMAIL = "eve@example.com"
PASSWORD = "correct horse"
TIMEOUT = 60_000  # ms, for anything that waits on the app (generous: CI may be slow)


def write_y4m(path: Path, payload: str, frames: int = 4, size: tuple[int, int] = (640, 480)):
    """A still video of a QR code on white paper: YUV4MPEG2, 4:2:0, grey (U = V = 128)."""
    width, height = size
    qr = qrcode.QRCode(border=4, box_size=1, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(payload)
    qr.make(fit=True)
    modules = np.array(qr.get_matrix(), dtype=bool)
    scale = (min(width, height) - 40) // modules.shape[0]
    code = np.kron(np.where(modules, 0, 255).astype(np.uint8), np.ones((scale, scale), np.uint8))
    luma = np.full((height, width), 235, np.uint8)
    top, left = (height - code.shape[0]) // 2, (width - code.shape[1]) // 2
    luma[top : top + code.shape[0], left : left + code.shape[1]] = np.maximum(code, 16)
    chroma = np.full((height // 2, width // 2), 128, np.uint8).tobytes()
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n")
            f.write(luma.tobytes())
            f.write(chroma)
            f.write(chroma)


def write_avi(path: Path, payload: str, frames: int = 5) -> Path:
    """A short MJPEG video of the code, for ``--camera FILE`` (OpenCV reads it)."""
    import cv2

    code = np.array(qrcode.make(payload).convert("L").resize((400, 400)))
    frame = np.full((480, 640, 3), 255, np.uint8)
    frame[40:440, 120:520] = code[..., None]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    return path


def png_of(payload: str, path: Path) -> Path:
    buf = io.BytesIO()
    qrcode.make(payload).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


class WalletProcess:
    """``scanpay wallet`` as its own process, as a shop runs it (this also keeps the
    wallet's grpc.aio state apart from the other tests' event loops in this process)."""

    def __init__(self, psp: str, data_dir: Path, camera: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [
            sys.executable,
            "-m",
            "psp_server",
            "wallet",
            "--psp",
            psp,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data",
            str(data_dir),
            "--camera",
            camera,
        ]
        self.log = data_dir.parent / "wallet.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WalletProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=log, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the wallet exited; see {self.log}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)  # the server is still starting: nothing to wait on
        raise TimeoutError(f"the wallet did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@dataclass
class World:
    psp: LivePsp
    merchant: MerchantCreds
    camera_payment: str
    shop_payment: str
    wallet: WalletProcess
    browser: object
    files: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run ./run setup (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    files = tmp_path_factory.mktemp("wallet-e2e")
    psp = LivePsp(files / "psp").start()
    wallet = None
    try:
        merchant = psp.create_merchant()
        psp.create_consumer(EMAIL, PASSWORD, balance_minor=100_00)
        payment_id, payload = psp.create_payment(merchant.api_key, 12_50, order_id="TILL-1-0042")
        video = files / "qr.y4m"
        write_y4m(video, payload)
        # The till's code in front of a camera on the serving machine (a video file here).
        shop_id, shop_payload = psp.create_payment(merchant.api_key, 4_20, order_id="TILL-1-0043")
        shop_video = write_avi(files / "till.avi", shop_payload)
        wallet = WalletProcess(psp.address, files / "w", camera=str(shop_video)).start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--use-fake-device-for-media-stream",
                    "--use-fake-ui-for-media-stream",
                    f"--use-file-for-fake-video-capture={video}",
                ],
            )
            try:
                yield World(psp, merchant, payment_id, shop_id, wallet, browser, files)
            finally:
                browser.close()
    finally:
        if wallet is not None:
            wallet.stop()
            # Shown with a failing test's output: what the wallet process said.
            if wallet.log.exists():
                tail = wallet.log.read_text(errors="replace").splitlines()[-80:]
                print("--- wallet.log (last 80 lines)", *tail, sep="\n")
        psp.stop()
        shutil.rmtree(files, ignore_errors=True)


@pytest.fixture(scope="module")
def context(world: World):
    ctx = world.browser.new_context(  # type: ignore[attr-defined]
        permissions=["camera"], viewport={"width": 480, "height": 900}
    )
    ctx.set_default_timeout(TIMEOUT)
    yield ctx
    ctx.close()


def open_wallet(world: World, context):
    page = context.new_page()
    page.goto(world.wallet.url)
    page.wait_for_selector("flt-semantics-placeholder", state="attached")
    # Turn on Flutter's accessibility tree, then find things by role and text.
    page.locator("flt-semantics-placeholder").dispatch_event("click")
    return page


def fill(page, label: str, text: str) -> None:
    """Type into a field as a person does (click, clear it, type), move on (Tab), then
    check what the field holds. On a busy machine Flutter can drop the last keys typed
    just before the focus moves on: a failed run's fields held "eve@example." and
    "correct" although each had read in full while it still had the focus (the second
    sign-in then went out with them). So the check is made after the field has lost the
    focus and Flutter has written its own value back. Tries again, a few times.

    The old text goes with End and a Backspace per character, checked empty before the
    typing: once (Chromium 156.0.8078.114) Control+A selected nothing, every try
    appended, and the Email field ended as "eve@example.comeveveve...". Backspaces
    clear the field whether or not a selection landed."""
    from playwright.sync_api import expect

    box = page.get_by_role("textbox", name=label)
    for _ in range(4):
        box.click()
        expect(box).to_be_focused()
        held = box.input_value()
        if held:
            page.keyboard.press("End")
            for _ in held:
                page.keyboard.press("Backspace")
            try:
                expect(box).to_have_value("", timeout=3_000)
            except AssertionError:
                continue
        page.keyboard.type(text, delay=10)
        page.keyboard.press("Tab")
        expect(box).not_to_be_focused()
        page.wait_for_timeout(300)  # Flutter's model, written back to the field
        try:
            expect(box).to_have_value(text, timeout=3_000)
            return
        except AssertionError:
            continue
    expect(box).to_have_value(text)


def sign_in(page, password: str = PASSWORD) -> None:
    from playwright.sync_api import expect

    fill(page, "Email", EMAIL)
    fill(page, "Password", password)
    # Both still hold what was typed when the button is pressed.
    expect(page.get_by_role("textbox", name="Email")).to_have_value(EMAIL)
    expect(page.get_by_role("textbox", name="Password")).to_have_value(password)
    page.get_by_role("button", name="Sign in").click()


def balance_is(page, amount: str) -> None:
    """Wait until Home shows this balance (the balance card reads as one text)."""
    page.get_by_text(re.compile(rf"^Balance\s+{re.escape(amount)}\s")).wait_for()


def upload(page, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Choose photo").click()
    chooser.value.set_files(str(path))


def merchant_saw(world: World, payment_id: str) -> bool:
    events = world.psp.watch_events(world.merchant.api_key, timeout=3.0)
    return ("PAYMENT_EVENT_TYPE_SUCCEEDED", payment_id) in {(t, p) for _, t, p in events}


def test_sign_in_scan_with_the_camera_and_pay(world: World, context):
    page = open_wallet(world, context)
    page.get_by_role("button", name="Sign in").wait_for()
    sign_in(page, password="not my password")
    page.get_by_text("Wrong e-mail or password", exact=True).wait_for()
    sign_in(page)
    balance_is(page, "100.00 EUR")

    page.get_by_role("button", name="Scan to pay").click()
    page.get_by_role("button", name="Use camera").click()
    pay = page.get_by_role("button", name="Pay 12.50 EUR")
    pay.wait_for()
    # Flutter merges a card's texts into one accessible node.
    page.get_by_text(
        re.compile(r"^Pay to\s+Corner Bakery\s+Berlin, DE\s+Verified by ScanPay")
    ).wait_for()
    page.get_by_text("12.50 EUR", exact=True).wait_for()
    pay.click()
    page.get_by_text("Payment successful").wait_for()
    page.get_by_text("New balance 87.50 EUR").wait_for()

    assert merchant_saw(world, world.camera_payment)
    assert world.psp.balance_minor(EMAIL, PASSWORD) == 87_50
    page.get_by_role("button", name="Done").click()
    balance_is(page, "87.50 EUR")

    # Signed in survives a reload (the refresh token is in the browser's storage).
    page.reload()
    page.wait_for_selector("flt-semantics-placeholder", state="attached")
    page.locator("flt-semantics-placeholder").dispatch_event("click")
    balance_is(page, "87.50 EUR")
    assert page.get_by_role("button", name="Scan to pay").is_visible()
    page.close()


def test_photo_of_a_static_qr_with_amount_entry(world: World, context):
    page = open_wallet(world, context)
    page.get_by_role("button", name="Scan to pay").wait_for()  # still signed in
    page.get_by_role("button", name="Scan to pay").click()
    upload(page, png_of(world.psp.static_qr(world.merchant.api_key), world.files / "static.png"))
    page.get_by_role("textbox", name=re.compile(r"^Amount \(EUR\)")).wait_for()
    fill(page, "Amount (EUR)", "7.5")
    page.get_by_role("button", name="Review").click()
    page.get_by_role("button", name="Pay 7.50 EUR").click()
    page.get_by_text("Payment successful").wait_for()
    page.get_by_text("New balance 80.00 EUR").wait_for()
    assert world.psp.balance_minor(EMAIL, PASSWORD) == 80_00
    page.close()


def test_error_screens(world: World, context):
    page = open_wallet(world, context)
    page.get_by_role("button", name="Scan to pay").click()
    # The code the camera already paid.
    _, paid = world.psp.create_payment(world.merchant.api_key, 3_00)
    world.psp.wallet_pay(EMAIL, PASSWORD, payload=paid)
    upload(page, png_of(paid, world.files / "paid.png"))
    page.get_by_text("This code has already been paid").wait_for()
    page.get_by_role("button", name="Scan another code").click()
    # More than the wallet holds.
    big_id, big = world.psp.create_payment(world.merchant.api_key, 95_00)
    upload(page, png_of(big, world.files / "big.png"))
    page.get_by_role("button", name="Pay 95.00 EUR").click()
    page.get_by_text("Not enough money in your wallet").wait_for()
    assert world.psp.balance_minor(EMAIL, PASSWORD) == 77_00
    assert not merchant_saw(world, big_id)
    page.close()


def test_shop_camera_on_the_serving_machine(world: World, context):
    page = open_wallet(world, context)
    page.get_by_role("button", name="Scan to pay").click()
    page.get_by_role("button", name="Shop camera").click()
    page.get_by_role("button", name="Pay 4.20 EUR").click()
    page.get_by_text("Payment successful").wait_for()
    assert merchant_saw(world, world.shop_payment)
    assert world.psp.balance_minor(EMAIL, PASSWORD) == 72_80
    page.close()
