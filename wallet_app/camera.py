"""A camera on the serving machine (``scanpay wallet --camera 0``), through OpenCV.

One reader thread pulls frames from the device (or from a video file standing in for one),
decodes each with the scanner's fast path and encodes a small JPEG preview; every browser
session that is scanning with it gets the latest frame. The thread runs only while at least
one session is watching, and a slow session never holds up the others (it skips frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

PREVIEW_WIDTH = 320
PREVIEW_QUALITY = 70


@dataclass(frozen=True, slots=True)
class CameraFrame:
    jpeg: bytes
    payloads: list[str] = field(default_factory=list)


def parse_source(text: str) -> int | str:
    """``"0"`` is the first camera device; anything else is a path (a video file)."""
    return int(text) if text.strip().isdigit() else text


def _scanner_frames(source: int | str) -> Iterator[np.ndarray]:
    from wallet_app import scanner

    return scanner.iter_camera(source)


def _scanner_decode(frame: np.ndarray) -> list[str]:
    from wallet_app import scanner

    return list(scanner.decode_frame(frame, fast=True).payloads)


def preview_jpeg(frame: np.ndarray, width: int = PREVIEW_WIDTH) -> bytes:
    h, w = frame.shape[:2]
    if w > width:
        frame = cv2.resize(frame, (width, max(1, h * width // w)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_QUALITY])
    if not ok:
        raise RuntimeError("could not encode a preview frame")
    return buf.tobytes()


class CameraHub:
    """Shares one camera among the sessions scanning with it."""

    def __init__(
        self,
        source: str,
        *,
        fps: float = 8.0,
        frames: Callable[[int | str], Iterator[np.ndarray]] = _scanner_frames,
        decode: Callable[[np.ndarray], list[str]] = _scanner_decode,
        loop_video: bool = True,
    ) -> None:
        self.source = parse_source(source)
        self.loop_video = loop_video
        self.label = f"camera {self.source}" if isinstance(self.source, int) else f"video {source}"
        self._period = 1.0 / fps
        self._open_frames = frames
        self._decode = decode
        self._lock = threading.Lock()
        self._subscribers: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = {}
        self._next_id = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    async def frames(self) -> AsyncGenerator[CameraFrame, None]:
        """The camera's frames from now on, until the caller stops or the stream ends."""
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        loop = asyncio.get_running_loop()
        with self._lock:
            sid = self._next_id
            self._next_id += 1
            self._subscribers[sid] = (loop, queue)
            stopping = self._thread if self._stop.is_set() else None
        try:
            if stopping is not None:  # the last watcher just left: let its reader close
                await asyncio.to_thread(stopping.join, 5.0)
            with self._lock:
                thread = self._thread
                if thread is None or not thread.is_alive() or self._stop.is_set():
                    self._stop = threading.Event()
                    self._thread = threading.Thread(
                        target=self._run, args=(self._stop,), name="wallet-camera", daemon=True
                    )
                    self._thread.start()
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    return
                yield item
        finally:
            with self._lock:
                self._subscribers.pop(sid, None)
                if not self._subscribers:
                    self._stop.set()

    def _publish(self, item: Any) -> None:
        with self._lock:
            targets = list(self._subscribers.values())
        for loop, queue in targets:
            with contextlib.suppress(RuntimeError):  # that session's loop has closed
                loop.call_soon_threadsafe(_offer, queue, item)

    def _run(self, stop: threading.Event) -> None:
        frames: Iterator[np.ndarray] | None = None
        try:
            while not stop.is_set():
                frames = self._open_frames(self.source)
                shown = 0
                for frame in frames:
                    if stop.is_set():
                        return
                    started = time.monotonic()
                    try:
                        payloads = self._decode(frame)
                    except Exception:
                        log.debug("frame did not decode", exc_info=True)
                        payloads = []
                    self._publish(CameraFrame(preview_jpeg(frame), payloads))
                    shown += 1
                    spare = self._period - (time.monotonic() - started)
                    if spare > 0 and stop.wait(spare):
                        return
                # A video file standing in for a camera plays in a loop; a device that
                # stops sending (unplugged) ends the stream.
                if not (self.loop_video and isinstance(self.source, str) and shown):
                    break
            self._publish(None)
        except Exception as exc:
            log.warning("camera %s failed", self.source, exc_info=True)
            self._publish(RuntimeError(f"{self.label} failed: {exc}"))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


def _offer(queue: asyncio.Queue[Any], item: Any) -> None:
    """Keep only the newest item: a session that lags skips frames, it never queues them."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)
