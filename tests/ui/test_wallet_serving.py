"""Serving the wallet: the shared server-side camera, the self-signed certificate, HTTPS,
and the command line."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import qrcode
from cryptography import x509

from wallet_app.__main__ import WalletServer, build_parser, wallet_urls
from wallet_app.camera import CameraHub, parse_source, preview_jpeg
from wallet_app.tls import certificate_names, ensure_certificate


def qr_frame(payload: str) -> np.ndarray:
    code = np.array(qrcode.make(payload).convert("L").resize((300, 300)))
    frame = np.full((480, 640, 3), 255, np.uint8)
    frame[90:390, 170:470] = code[..., None]
    return frame


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


async def test_camera_hub_reads_a_video_with_the_scanner(tmp_path):
    blank = np.full((480, 640, 3), 200, np.uint8)
    video = write_video(tmp_path / "till.avi", [blank, blank, qr_frame("000201010212ABC")])
    hub = CameraHub(str(video), fps=100, loop_video=False)
    assert hub.label.startswith("video")
    seen = []
    async for frame in hub.frames():
        assert frame.jpeg[:2] == b"\xff\xd8"  # a JPEG preview
        seen.append(frame.payloads)
    assert seen == [[], [], ["000201010212ABC"]]


async def test_camera_hub_shares_one_reader_and_stops_when_nobody_watches():
    opened = []
    stop = threading.Event()

    def frames(source):
        opened.append(source)
        n = 0
        while not stop.is_set():
            n += 1
            yield np.full((48, 64, 3), n % 255, np.uint8)

    hub = CameraHub("0", fps=200, frames=frames, decode=lambda f: [])

    async def watch(count):
        got = 0
        async for _ in hub.frames():
            got += 1
            if got == count:
                return got
        return got

    assert await asyncio.gather(watch(5), watch(5)) == [5, 5]
    await asyncio.to_thread(hub._thread.join, 5)
    assert not hub._thread.is_alive()
    assert await watch(2) == 2  # a new watcher starts it again
    stop.set()
    assert opened == [0, 0]


async def test_camera_hub_reports_a_broken_camera():
    def frames(source):
        raise OSError("cannot open camera 3")

    hub = CameraHub("3", frames=frames)
    with pytest.raises(RuntimeError, match="cannot open camera 3"):
        async for _ in hub.frames():
            pass


def test_camera_source_and_preview():
    assert parse_source("0") == 0
    assert parse_source("clip.mp4") == "clip.mp4"
    jpeg = preview_jpeg(np.zeros((960, 1280, 3), np.uint8))
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3)


def test_self_signed_certificate_is_made_once(tmp_path):
    cert, key = ensure_certificate(tmp_path, hosts=["till.local"])
    names = certificate_names(cert)
    assert {"localhost", "127.0.0.1", "till.local"} <= set(names)
    assert any(ipaddress.ip_address(n).version == 6 for n in names if ":" in n)
    assert key.stat().st_mode & 0o077 == 0
    again = ensure_certificate(tmp_path)
    assert again == (cert, key)
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    assert loaded.not_valid_after_utc > loaded.not_valid_before_utc


def test_https_serving(tmp_path):
    server = WalletServer("127.0.0.1:9", host="127.0.0.1", port=0, https=True, data_dir=tmp_path)
    server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "wallet-cert.pem"))
        with urllib.request.urlopen(server.url, context=ctx, timeout=10) as reply:
            body = reply.read().decode()
        assert "flutter" in body.lower()
        assert "flet.noCdn=true" in body  # works offline: nothing from a CDN
    finally:
        server.stop()


def test_urls_and_arguments():
    assert wallet_urls("127.0.0.1", 8550, False) == ["http://127.0.0.1:8550/"]
    everywhere = wallet_urls("0.0.0.0", 8443, True)
    assert everywhere[0] == "https://127.0.0.1:8443/"
    assert all(u.startswith("https://") for u in everywhere)
    args = build_parser().parse_args(
        ["--psp", "psp:50051", "--host", "0.0.0.0", "--https", "--camera", "0"]
    )
    assert (args.psp, args.host, args.port, args.https, args.camera) == (
        "psp:50051",
        "0.0.0.0",
        8550,
        True,
        "0",
    )


def test_scanpay_wallet_help(capsys):
    from psp_server.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["wallet", "--help"])
    assert exc.value.code == 0
    assert "--https" in capsys.readouterr().out
