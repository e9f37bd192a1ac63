"""The wallet's QR scanner: the decoder chain, files, bytes, videos, the CLI, and the
camera-like frame generator it is measured with."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import qrcode

from wallet_app import framegen, scanner

ROOT = Path(__file__).resolve().parents[2]
EMV = (
    "00020101021226580011COM.SCANPAY0110M1234567890225ABCDEFGHJKLMNPQRSTUVWXYZ2"
    "520458125303978540512.505802DE5912CAFE CENTRAL6006BERLIN62240110ORD-1234560706TILL01"
    "6304"
)
UTF8 = "000201010212" + "5911Café Müller6007München" + "62180114ORD-4711-Köln" + "6304"


@pytest.fixture(autouse=True)
def _fresh_decoders() -> Iterator[None]:
    """Each test looks the decoders up afresh, and leaves no patched state behind."""
    scanner.reload_decoders()
    yield
    scanner.reload_decoders()


def _png(path: Path, payload: str, **kwargs: object) -> Path:
    qrcode.make(payload.encode("utf-8"), **kwargs).save(path)
    return path


def _on_canvas(payload: str) -> np.ndarray:
    """A 640x480 BGR frame with the payload's code in the middle."""
    code = framegen.render_qr_image(payload, module_px=4)
    frame = np.full((480, 640, 3), 255, np.uint8)
    y, x = (480 - code.shape[0]) // 2, (640 - code.shape[1]) // 2
    frame[y : y + code.shape[0], x : x + code.shape[1]] = code[..., None]
    return frame


def _blank(h: int = 480, w: int = 640) -> np.ndarray:
    """A plain scene with some clutter and no QR code."""
    img = np.full((h, w, 3), 170, np.uint8)
    cv2.rectangle(img, (50, 60), (300, 200), (40, 90, 160), -1)
    cv2.putText(img, "NO CODE HERE", (80, 350), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (20, 20, 20), 3)
    return img


# --- the chain ---------------------------------------------------------------------------------


def test_all_three_decoders_are_present_here_in_chain_order() -> None:
    assert scanner.available_decoders() == ["zxing", "pyzbar", "opencv"]
    stages = scanner.chain_stages()
    assert stages[0] == "zxing:raw"
    assert [s.split(":")[0] for s in stages] == sorted(
        (s.split(":")[0] for s in stages), key=scanner.DECODERS.index
    )
    assert all(s.startswith("zxing:") for s in scanner.chain_stages(fast=True))


def test_decodes_a_clean_qrcode_png(tmp_path: Path) -> None:
    result = scanner.decode_image_file(_png(tmp_path / "emv.png", EMV))
    assert result.payloads == [EMV]
    assert result.decoder == "zxing"
    assert result.stage == "zxing:raw"
    assert result.ms > 0


@pytest.mark.parametrize("only", ["zxing", "pyzbar", "opencv"])
def test_utf8_payloads_come_back_as_text_from_every_decoder(
    only: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _png(tmp_path / "utf8.png", UTF8)
    monkeypatch.setenv(scanner.DECODERS_ENV, only)
    assert scanner.reload_decoders() == [only]
    result = scanner.decode_image_file(path)
    assert (result.decoder, result.payloads) == (only, [UTF8])


@pytest.mark.parametrize(("tier", "seed"), [("easy", 0), ("easy", 1), ("medium", 2), ("medium", 3)])
def test_reads_generated_camera_frames(tier: str, seed: int) -> None:
    frame = framegen.generate_frame(seed, tier)
    assert scanner.decode_frame(frame.image).payloads == [frame.payload]
    fast = scanner.decode_frame(frame.image, fast=True)
    assert fast.payloads == [frame.payload]
    assert fast.stage in scanner.chain_stages(fast=True)


def test_reads_an_inverted_code() -> None:
    light_on_dark = 255 - framegen.render_qr_image(EMV, module_px=4)
    result = scanner.decode_frame(light_on_dark)
    assert result.payloads == [EMV]


def test_accepts_gray_bgr_bgra_and_float_frames() -> None:
    gray = framegen.render_qr_image(EMV, module_px=3)
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    frames = [gray, gray[..., None], bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), gray / 255.0]
    for frame in frames:
        assert scanner.decode_frame(frame).payloads == [EMV]
    with pytest.raises(ValueError, match="shape"):
        scanner.decode_frame(np.zeros((4, 4, 2), np.uint8))


def test_decodes_jpeg_bytes_from_a_phone() -> None:
    frame = framegen.generate_frame(4, "medium")
    ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    result = scanner.decode_image_bytes(jpeg.tobytes())
    assert result.payloads == [frame.payload]


def test_a_transparent_png_is_read_against_white() -> None:
    code = framegen.render_qr_image(EMV, module_px=4)
    bgra = np.zeros((*code.shape, 4), np.uint8)
    bgra[..., 3] = np.where(code < 128, 255, 0)  # black modules, transparent background
    ok, png = cv2.imencode(".png", bgra)
    assert ok
    assert scanner.decode_image_bytes(png.tobytes()).payloads == [EMV]


def test_no_code_gives_empty_payloads(tmp_path: Path) -> None:
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), _blank())
    result = scanner.decode_image_file(path)
    assert (result.payloads, result.decoder, result.stage) == ([], None, None)


def test_unreadable_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(scanner.UnreadableFileError, match=r"no such file|cannot read"):
        scanner.decode_image_file(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(scanner.UnreadableFileError):
        scanner.decode_image_file(tmp_path / "notes.txt")
    with pytest.raises(scanner.UnreadableFileError):
        scanner.decode_image_bytes(b"")


def test_several_codes_come_back_once_each_in_reading_order() -> None:
    a, b, c = (framegen.render_qr_image(p, module_px=3) for p in ("FIRST A", "SECOND B", "THIRD C"))
    size = max(x.shape[0] for x in (a, b, c))
    canvas = np.full((2 * size + 40, 2 * size + 40), 255, np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a  # top left
    canvas[: b.shape[0], size + 40 : size + 40 + b.shape[1]] = b  # top right
    canvas[size + 40 : size + 40 + c.shape[0], : c.shape[1]] = c  # bottom left
    assert scanner.decode_frame(canvas).payloads == ["FIRST A", "SECOND B", "THIRD C"]
    twice = np.hstack([a, a])
    assert scanner.decode_frame(twice).payloads == ["FIRST A"]


# --- degrading ---------------------------------------------------------------------------------


def test_without_zxing_the_chain_falls_back_to_pyzbar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zxingcpp", None)  # import zxingcpp -> ImportError
    assert scanner.reload_decoders() == ["pyzbar", "opencv"]
    frame = framegen.generate_frame(0, "easy")
    result = scanner.decode_frame(frame.image)
    assert (result.decoder, result.payloads) == ("pyzbar", [frame.payload])
    assert all(s.startswith("pyzbar:") for s in scanner.chain_stages(fast=True))


def test_without_libzbar_and_zxing_opencv_still_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libzbar() -> None:
        raise ImportError("Unable to find zbar shared library")

    monkeypatch.setitem(sys.modules, "zxingcpp", None)
    monkeypatch.setitem(scanner._LOADERS, "pyzbar", no_libzbar)
    assert scanner.reload_decoders() == ["opencv"]
    result = scanner.decode_frame(framegen.render_qr_image(EMV, module_px=4))
    assert (result.decoder, result.payloads) == ("opencv", [EMV])
    inverted = scanner.decode_frame(255 - framegen.render_qr_image(EMV, module_px=4))
    assert inverted.payloads == [EMV]


def test_the_environment_can_switch_decoders_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(scanner.DECODERS_ENV, "opencv, pyzbar")
    assert scanner.reload_decoders() == ["pyzbar", "opencv"]


def test_with_no_decoder_nothing_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(scanner.DECODERS_ENV, "none")
    assert scanner.reload_decoders() == []
    result = scanner.decode_frame(framegen.render_qr_image(EMV))
    assert (result.payloads, result.decoder) == ([], None)


# --- video and camera --------------------------------------------------------------------------


def _write_video(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    assert writer.isOpened(), "MJPG/AVI should be writable with opencv-python-headless"
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def test_reads_a_video_until_the_code_appears(tmp_path: Path) -> None:
    code = framegen.generate_frame(5, "easy")
    path = _write_video(tmp_path / "clip.avi", [_blank()] * 6 + [code.image] * 3)
    result = scanner.decode_video_file(path)
    assert result.payloads == [code.payload]
    assert result.frames == 7


def test_a_video_without_a_code_stops_at_the_frame_cap(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "empty.avi", [_blank()] * 8)
    result = scanner.decode_video_file(path, max_frames=5)
    assert (result.payloads, result.frames) == ([], 5)
    with pytest.raises(scanner.UnreadableFileError):
        scanner.decode_video_file(tmp_path / "missing.avi")


def test_iter_camera_yields_frames_and_releases_on_close(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "cam.avi", [_blank()] * 4)
    frames = scanner.iter_camera(str(path))
    first = next(frames)
    assert first.shape == (480, 640, 3)
    frames.close()
    assert list(frames) == []
    with pytest.raises(scanner.UnreadableFileError):
        scanner.iter_camera(str(tmp_path / "no-such-camera.avi"))


# --- the command line --------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "psp_server", "qr", "scan", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_prints_one_json_line_per_file_and_exit_codes(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png", EMV)
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), _blank())
    video = _write_video(tmp_path / "clip.avi", [_blank(), _on_canvas(EMV)])

    ok = _cli(str(good), str(video))
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [(r["file"], r["payloads"]) for r in lines] == [(str(good), [EMV]), (str(video), [EMV])]
    assert all(isinstance(r["ms"], float) for r in lines)

    some_missed = _cli(str(good), str(empty))
    assert some_missed.returncode == 1
    assert [json.loads(line)["payloads"] for line in some_missed.stdout.splitlines()] == [[EMV], []]

    broken = _cli(str(good), str(tmp_path / "missing.png"))
    assert broken.returncode == 2
    first, second = (json.loads(line) for line in broken.stdout.splitlines())
    assert first["payloads"] == [EMV] and "error" not in first
    assert second["payloads"] == [] and "no such file" in second["error"]
    assert "missing.png" in broken.stderr


def test_cli_usage_errors_exit_2() -> None:
    from wallet_app.scan_cli import main

    assert main([]) == 2
    assert main(["--timeout", "soon", "x.png"]) == 2
    assert main(["--camera", "0", "x.png"]) == 2


def test_cli_camera_reads_a_stream_or_reports_it_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from wallet_app.scan_cli import main

    video = _write_video(tmp_path / "cam.avi", [_blank()] * 3 + [_on_canvas(EMV)])
    assert main(["--camera", str(video), "--timeout", "30"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["payloads"] == [EMV] and record["frames"] == 4

    assert main(["--camera", str(tmp_path / "none.avi"), "--timeout", "1"]) == 2
    out = capsys.readouterr()
    assert "error" in json.loads(out.out) and "cannot open camera" in out.err


# --- the frame generator -----------------------------------------------------------------------


def test_frames_are_deterministic_640x480_with_realistic_payloads() -> None:
    a = framegen.generate_frame(11, "hard")
    b = framegen.generate_frame(11, "hard")
    assert np.array_equal(a.image, b.image) and a.payload == b.payload
    assert a.image.shape == (480, 640, 3) and a.image.dtype == np.uint8
    assert framegen.generate_frame(11, "hard", gray=True).image.shape == (480, 640)
    assert not np.array_equal(a.image, framegen.generate_frame(12, "hard").image)

    rng = np.random.default_rng(3)
    payloads = [framegen.make_payload(rng) for _ in range(60)]
    assert all(100 <= len(p) <= 250 for p in payloads)
    assert any(p.isupper() and p.isascii() for p in payloads)
    assert any(not p.isascii() for p in payloads)
    for p in payloads:
        assert p.startswith("000201") and p[-8:-4] == "6304"
        crc = framegen.crc16_ccitt_false(p[:-4].encode())
        assert p[-4:] == f"{crc:04X}"


def test_tiers_get_harder() -> None:
    easy, medium, hard = (framegen.TIERS[t] for t in ("easy", "medium", "hard"))
    assert easy.code_px[0] > medium.code_px[0] > hard.code_px[0]
    assert easy.defocus[1] < medium.defocus[1] < hard.defocus[1]
    assert easy.noise[1] < medium.noise[1] < hard.noise[1]
    assert easy.jpeg[0] > medium.jpeg[0] > hard.jpeg[0]
    assert easy.motion_p == 0 < medium.motion_p < hard.motion_p


def test_deblur_stages_run_last_among_zxing_and_not_on_the_fast_path() -> None:
    stages = scanner.chain_stages()
    deblur = [s for s in stages if ":deblur-" in s]
    assert deblur and all(s.startswith("zxing:") for s in deblur)
    assert stages.index(deblur[0]) > stages.index("zxing:sharpen")
    assert not any(":deblur-" in s for s in scanner.chain_stages(fast=True))


def test_blur_direction_finds_the_motion_of_a_blurred_code() -> None:

    code = framegen.render_qr_image("SCANPAY-DEBLUR-TEST-0123456789", module_px=4)
    img = np.full((480, 640), 200, np.uint8)
    h, w = code.shape[:2]
    img[100 : 100 + h, 200 : 200 + w] = code if code.ndim == 2 else code[:, :, 0]
    blurred = cv2.filter2D(img, -1, scanner._motion_kernel(9.0, np.radians(30)))
    angle = scanner._blur_direction(blurred)
    assert angle is not None
    assert abs((np.degrees(angle) - 30 + 90) % 180 - 90) < 15  # a rough estimate
    assert scanner._blur_direction(np.full((64, 64), 128, np.uint8)) is None


def _blurred_code(length: float, degrees: float, defocus: float) -> np.ndarray:
    """A small code on a plain 640x480 frame, out of focus, maybe moving, with sensor noise."""
    code = framegen.render_qr_image(
        "SCANPAY-DEBLUR-TEST-0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789", module_px=3
    )
    img = np.full((480, 640), 200, np.float32)
    img[100 : 100 + code.shape[0], 200 : 200 + code.shape[1]] = code
    kernel = scanner._disk_kernel(defocus)
    if length:
        motion = scanner._motion_kernel(length, np.radians(degrees))
        kernel = cv2.filter2D(np.pad(kernel, motion.shape[0]), -1, motion)
    noisy = cv2.filter2D(img, -1, kernel) + np.random.default_rng(1).normal(0, 2, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("length", "degrees"), [(8.0, 60.0), (9.0, 120.0), (10.0, 20.0)])
def test_blur_length_finds_the_length_of_a_moving_code(length: float, degrees: float) -> None:
    frame = _blurred_code(length, degrees, 1.5)
    angle = scanner._blur_direction(frame)
    assert angle is not None
    assert abs((np.degrees(angle) - degrees + 90) % 180 - 90) < 10
    assert 0 <= scanner._blur_length(frame, angle) - length <= 2  # runs long by about a pixel


@pytest.mark.parametrize(
    ("length", "degrees", "defocus", "stage"),
    [(0.0, 0.0, 2.0, "zxing:restore-d"), (10.0, 20.0, 1.4, "zxing:restore-m")],
)
def test_restore_stages_read_blur_that_the_earlier_stages_cannot(
    length: float, degrees: float, defocus: float, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = _blurred_code(length, degrees, defocus)
    result = scanner.decode_frame(frame)
    assert result.payloads and result.stage is not None and result.stage.startswith(stage)
    stages = scanner.chain_stages()
    restore = [i for i, s in enumerate(stages) if s.startswith("zxing:restore-")]
    assert restore and min(restore) > max(i for i, s in enumerate(stages) if ":deblur-" in s)
    assert not any(":restore-" in s for s in scanner.chain_stages(fast=True))
    without = tuple(st for st in scanner._CHAIN if not st.prep.startswith("restore-"))
    monkeypatch.setattr(scanner, "_CHAIN", without)
    assert scanner.decode_frame(frame).payloads == []
