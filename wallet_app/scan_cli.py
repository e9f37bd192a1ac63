"""``scanpay qr scan``: read QR codes from image or video files, or live from a camera.

One JSON line per file on stdout::

    {"file": "till.png", "payloads": ["000201..."], "ms": 3.1, "decoder": "zxing"}

Exit status: 0 when every file (or the camera) yielded at least one payload, 1 when some did
not, 2 on usage errors or unreadable files (these still get a JSON line, with an "error" key,
and a message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

PROG = "scanpay qr scan"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Read QR codes from image or video files, or live from a camera.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="images or video files")
    parser.add_argument(
        "--camera",
        metavar="N",
        help="scan live from camera N (or a device path, video file or stream URL)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --camera: give up after this long (default 10)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=300,
        metavar="N",
        help="video files: examine at most this many frames (default 300)",
    )
    return parser


def _quiet_opencv() -> None:
    """Our own messages say what went wrong; OpenCV's warnings would only repeat them."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def _scan_file(path: str, max_frames: int) -> tuple[dict[str, Any], int]:
    """The JSON record for one file and its exit status (0 read, 1 nothing read, 2 error)."""
    from wallet_app import scanner

    start = time.perf_counter()
    p = Path(path)
    try:
        if not p.is_file():
            raise scanner.UnreadableFileError(
                f"cannot read {path}: {'not a file' if p.exists() else 'no such file'}"
            )
        if p.suffix.lower() in scanner.VIDEO_SUFFIXES:
            result = scanner.decode_video_file(p, max_frames=max_frames)
        else:
            try:
                result = scanner.decode_image_file(p)
            except scanner.UnreadableFileError:
                # Not an image: perhaps a video with an unusual name.
                try:
                    result = scanner.decode_video_file(p, max_frames=max_frames)
                except scanner.UnreadableFileError:
                    raise scanner.UnreadableFileError(
                        f"{path}: neither an image nor a video this scanner can read"
                    ) from None
    except scanner.UnreadableFileError as exc:
        ms = round((time.perf_counter() - start) * 1000, 1)
        print(f"{PROG}: {exc}", file=sys.stderr)
        return {"file": path, "payloads": [], "ms": ms, "error": str(exc)}, 2
    record: dict[str, Any] = {
        "file": path,
        "payloads": result.payloads,
        "ms": round(result.ms, 1),
        "decoder": result.decoder,
    }
    if result.frames > 1 or p.suffix.lower() in scanner.VIDEO_SUFFIXES:
        record["frames"] = result.frames
    return record, 0 if result.payloads else 1


def _scan_camera(source: str, timeout: float) -> int:
    """Scan live frames until the first decode or the timeout; one JSON line either way."""
    from wallet_app import scanner

    camera: int | str = int(source) if source.strip().isdigit() else source
    start = time.perf_counter()
    frames = 0
    try:
        feed = scanner.iter_camera(camera)
    except scanner.UnreadableFileError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        _emit({"camera": camera, "payloads": [], "ms": 0.0, "error": str(exc)})
        return 2
    result = None
    try:
        for frame in feed:
            # Every frame gets the fast stages; every tenth the whole chain.
            result = scanner.decode_frame(frame, fast=frames % 10 != 0)
            frames += 1
            if result.payloads or time.perf_counter() - start >= timeout:
                break
    finally:
        feed.close()
    record: dict[str, Any] = {
        "camera": camera,
        "payloads": result.payloads if result else [],
        "ms": round((time.perf_counter() - start) * 1000, 1),
        "decoder": result.decoder if result else None,
        "frames": frames,
    }
    if frames == 0:
        record["error"] = "the camera delivered no frames"
        print(f"{PROG}: camera {camera!r} delivered no frames", file=sys.stderr)
        _emit(record)
        return 2
    _emit(record)
    return 0 if record["payloads"] else 1


def main(argv: list[str]) -> int:
    """Run ``scanpay qr scan`` with the arguments after ``scan``; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.camera is not None and args.files:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: give either files or --camera, not both", file=sys.stderr)
        return 2
    if args.camera is None and not args.files:
        parser.print_usage(sys.stderr)
        print(
            f"{PROG}: error: nothing to scan: give image or video files, or --camera N",
            file=sys.stderr,
        )
        return 2
    if args.timeout <= 0 or args.max_frames <= 0:
        print(f"{PROG}: error: --timeout and --max-frames must be positive", file=sys.stderr)
        return 2
    _quiet_opencv()
    if args.camera is not None:
        return _scan_camera(args.camera, args.timeout)
    status = 0
    for path in args.files:
        record, file_status = _scan_file(path, args.max_frames)
        _emit(record)
        status = max(status, file_status)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
