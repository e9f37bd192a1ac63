"""Find and read payment QR codes in camera frames, photos and videos.

The decoder chain tries the cheapest, most capable reader first and falls back from there:

1. **zxing-cpp** (``zxingcpp``), restricted to QR codes: on the raw grayscale frame, then on a
   2x upscale, then on sharpened, smoothed, contrast-equalised (CLAHE) and adaptively
   thresholded variants, then on motion-deblurred ones (Wiener deconvolution along the
   blur direction and length estimated from the frame; only reached by frames nothing else
   read, at about 30 ms), and last on restored ones (a deconvolution regularised by the
   Laplacian, of a defocus disk alone or of defocus plus motion around the estimated blur;
   nine tries at about 5 ms each);
2. **pyzbar** (zbar, Debian ``libzbar0``, called through pyzbar's ``ctypes`` wrapper so that it
   can return raw UTF-8 bytes and also try light-on-dark codes): raw, CLAHE, adaptive threshold
   and sharpened 2x;
3. **OpenCV** ``QRCodeDetector``: raw, CLAHE, inverted CLAHE, adaptive threshold, 2x upscale.

The chain stops at the first stage that reads anything. zxing and pyzbar are optional: when a
module cannot be imported (or libzbar is missing) its stages are skipped, and
``available_decoders()`` lists what is present. ``decode_frame(..., fast=True)`` runs only the
cheap stages of the best available decoder, for live camera loops.

Payloads come back de-duplicated, in reading order (top to bottom, left to right), as text
decoded from UTF-8 (bytes that are not UTF-8 are read as ISO 8859-1, the QR default; zxing
applies the code's ECI designator when it has one).
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, cast

import cv2
import numpy as np

__all__ = [
    "DECODERS",
    "ScanResult",
    "UnreadableFileError",
    "available_decoders",
    "chain_stages",
    "decode_frame",
    "decode_image_bytes",
    "decode_image_file",
    "decode_video_file",
    "iter_camera",
    "reload_decoders",
]

#: The decoders in chain order.
DECODERS = ("zxing", "pyzbar", "opencv")

#: Restrict the chain to these decoders (comma-separated), e.g. for a comparison run.
DECODERS_ENV = "SCANPAY_QR_DECODERS"

VIDEO_SUFFIXES = frozenset(
    {".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv", ".y4m", ".mjpeg"}
)

# Preprocessing works on at most this many pixels on the long side; bigger photos are
# scaled down for everything but the first zxing pass (which downscales on its own).
_WORK_MAX_SIDE = 1600
_UPSCALE_MAX_SIDE = 1000  # upscale 2x only frames up to this size


@dataclass(frozen=True)
class ScanResult:
    """What one scan found: the payloads, the decoder that read them, and how long it took."""

    payloads: list[str]
    decoder: str | None  # "zxing", "pyzbar", "opencv", or None when nothing was read
    ms: float
    stage: str | None = None  # the chain stage that succeeded, e.g. "zxing:sharpen-up2"
    frames: int = field(default=1, compare=False)  # frames examined (videos, cameras)


class UnreadableFileError(ValueError):
    """The file does not exist, cannot be read, or is not an image or video OpenCV can open."""


# --- decoder back ends ------------------------------------------------------------------------


def _load_zxing() -> ModuleType:
    import zxingcpp

    return zxingcpp


def _load_pyzbar() -> ModuleType:
    from pyzbar import wrapper  # loads libzbar: ImportError when the library is missing

    return cast(ModuleType, wrapper)


def _load_opencv() -> ModuleType | None:
    return cv2 if hasattr(cv2, "QRCodeDetector") else None


_LOADERS: dict[str, Callable[[], ModuleType | None]] = {
    "zxing": _load_zxing,
    "pyzbar": _load_pyzbar,
    "opencv": _load_opencv,
}


@functools.cache
def _backend(name: str) -> ModuleType | None:
    """The decoder's module, or None when it is missing or switched off (SCANPAY_QR_DECODERS)."""
    wanted = os.environ.get(DECODERS_ENV, "").strip()
    if wanted and name not in {w.strip() for w in wanted.split(",")}:
        return None
    try:
        return _LOADERS[name]()
    except (ImportError, OSError):  # the module, or the shared library under it, is missing
        return None


def reload_decoders() -> list[str]:
    """Look for the decoders again (after installing one, or changing SCANPAY_QR_DECODERS)."""
    _backend.cache_clear()
    _zxing_formats.cache_clear()
    return available_decoders()


def available_decoders() -> list[str]:
    """The decoders this process can use, in chain order (a subset of ``DECODERS``)."""
    return [name for name in DECODERS if _backend(name) is not None]


@functools.cache
def _zxing_formats() -> Any:
    zx = _backend("zxing")
    assert zx is not None
    fmt = zx.BarcodeFormat
    if hasattr(fmt, "QRCodeModel2"):  # zxing-cpp 3: "QRCode" also means Micro QR and rMQR
        return [fmt.QRCodeModel2, fmt.QRCodeModel1]
    return fmt.QRCode


# A found code: its text and where it is (centre x, centre y, height) for reading order.
_Found = tuple[str, float, float, float]


def _text(data: bytes, fallback: str | None = None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return fallback if fallback is not None else data.decode("latin-1")


def _read_zxing(img: np.ndarray, either_polarity: bool = True) -> list[_Found]:
    zx = _backend("zxing")
    assert zx is not None
    found: list[_Found] = []
    for code in zx.read_barcodes(img, formats=_zxing_formats(), try_invert=either_polarity):
        p = code.position
        xs = [p.top_left.x, p.top_right.x, p.bottom_right.x, p.bottom_left.x]
        ys = [p.top_left.y, p.top_right.y, p.bottom_right.y, p.bottom_left.y]
        found.append((_text(code.bytes, code.text), sum(xs) / 4, sum(ys) / 4, max(ys) - min(ys)))
    return found


# zbar settings pyzbar does not name: return QR payload bytes as they are (zbar would
# otherwise guess a character set and mangle UTF-8 into Big5 or Shift-JIS), and look for
# light-on-dark codes when a frame yields nothing.
_ZBAR_CFG_ENABLE = 0
_ZBAR_CFG_BINARY = 4
_ZBAR_CFG_TEST_INVERTED = 0x81
_ZBAR_QRCODE = 64
_ZBAR_GRAY = int.from_bytes(b"Y800", "little")


def _read_pyzbar(img: np.ndarray, either_polarity: bool = True) -> list[_Found]:
    zb = _backend("pyzbar")
    assert zb is not None
    h, w = img.shape
    pixels = np.ascontiguousarray(img).tobytes()
    found: list[_Found] = []
    scanner = zb.zbar_image_scanner_create()
    try:
        zb.zbar_image_scanner_set_config(scanner, 0, _ZBAR_CFG_ENABLE, 0)
        zb.zbar_image_scanner_set_config(scanner, _ZBAR_QRCODE, _ZBAR_CFG_ENABLE, 1)
        zb.zbar_image_scanner_set_config(scanner, _ZBAR_QRCODE, _ZBAR_CFG_BINARY, 1)
        zb.zbar_image_scanner_set_config(scanner, 0, _ZBAR_CFG_TEST_INVERTED, int(either_polarity))
        image = zb.zbar_image_create()
        try:
            zb.zbar_image_set_format(image, _ZBAR_GRAY)
            zb.zbar_image_set_size(image, w, h)
            zb.zbar_image_set_data(image, ctypes.c_char_p(pixels), len(pixels), None)
            if zb.zbar_scan_image(scanner, image) <= 0:
                return []
            symbol = zb.zbar_image_first_symbol(image)
            while symbol:
                n = zb.zbar_symbol_get_data_length(symbol)
                data = ctypes.string_at(zb.zbar_symbol_get_data(symbol), n)
                points = zb.zbar_symbol_get_loc_size(symbol)
                xs = [zb.zbar_symbol_get_loc_x(symbol, i) for i in range(points)] or [0]
                ys = [zb.zbar_symbol_get_loc_y(symbol, i) for i in range(points)] or [0]
                cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
                found.append((_text(data), cx, cy, max(ys) - min(ys)))
                symbol = zb.zbar_symbol_next(symbol)
        finally:
            zb.zbar_image_destroy(image)
    finally:
        zb.zbar_image_scanner_destroy(scanner)
    return found


_local = threading.local()


def _read_opencv(img: np.ndarray, either_polarity: bool = True) -> list[_Found]:
    detector = getattr(_local, "qr_detector", None)
    if detector is None:  # OpenCV detectors are not thread-safe: one per thread
        detector = _local.qr_detector = cv2.QRCodeDetector()
    try:
        ok, texts, points, _ = detector.detectAndDecodeMulti(img)
    except cv2.error:
        return []
    if not ok or points is None:
        return []
    found: list[_Found] = []
    for text, quad in zip(texts, points, strict=False):
        if text:
            xs, ys = quad[:, 0], quad[:, 1]
            found.append((text, float(xs.mean()), float(ys.mean()), float(ys.max() - ys.min())))
    return found


_READERS: dict[str, Callable[[np.ndarray, bool], list[_Found]]] = {
    "zxing": _read_zxing,
    "pyzbar": _read_pyzbar,
    "opencv": _read_opencv,
}


# --- preprocessing ----------------------------------------------------------------------------


def _unsharp(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    return cv2.addWeighted(img, 1 + amount, cv2.GaussianBlur(img, (0, 0), sigma), -amount, 0)


def _up2(img: np.ndarray, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    return cv2.resize(img, None, fx=2, fy=2, interpolation=interpolation)


def _clahe(img: np.ndarray) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(img)


def _adaptive(img: np.ndarray, block: int, offset: int) -> np.ndarray:
    return cv2.adaptiveThreshold(
        img, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, offset
    )


# Motion deblurring, the last resort: Wiener deconvolution with a straight motion kernel (plus
# some defocus) along the blur direction and of the blur length that the frame itself suggests,
# then a 2x upscale smoothed again to tame the ringing. The direction comes from the gradient
# structure tensor (a QR code's edges are about isotropic, so the direction with the least
# gradient energy is the direction of motion), the length from the first minimum of the
# autocorrelation of the derivative along it.
class _Kernel(NamedTuple):
    length: float  # added to the estimated blur length (which runs long by about a pixel)
    defocus: float  # sigma of the disk kernel combined with the motion
    turn: float  # degrees added to the estimated direction
    nsr: float  # Wiener noise-to-signal ratio


_DEBLUR_KERNELS = {
    "a": _Kernel(-1.5, 1.6, 0.0, 0.01),
    "b": _Kernel(-0.5, 1.0, 0.0, 0.005),
    "c": _Kernel(-0.5, 1.0, 6.0, 0.005),
}
# Stage name: (kernel, sigma of the Gaussian smoothing after the 2x upscale).
_DEBLUR_STAGES: dict[str, tuple[str, float]] = {
    "deblur-a-s1": ("a", 1.0),
    "deblur-b-s2": ("b", 2.0),
    "deblur-a-s2": ("a", 2.0),
    "deblur-c-s2": ("c", 2.0),
    "deblur-b-s1": ("b", 1.0),
}
_DEBLUR_MAX_ISOTROPY = 0.9  # least/greatest gradient energy above this: no clear motion
_DEBLUR_LAGS = np.arange(2.0, 15.0, 0.5)  # blur lengths considered, px


def _blur_direction(img: np.ndarray) -> float | None:
    """The direction of motion blur in radians (image axes, y down), or None if there is none."""
    f = img.astype(np.float32)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    half_tr, root = (jxx + jyy) / 2, float(np.hypot((jxx - jyy) / 2, jxy))
    if half_tr <= 0 or (half_tr - root) / (half_tr + root) > _DEBLUR_MAX_ISOTROPY:
        return None
    return float((0.5 * np.arctan2(2 * jxy, jxx - jyy) + np.pi / 2) % np.pi)


def _disk_kernel(sigma: float) -> np.ndarray:
    radius = max(1.0, sigma * np.sqrt(2.0))
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = np.clip(radius + 0.5 - np.sqrt(xx * xx + yy * yy), 0, 1).astype(np.float32)
    return cast(np.ndarray, k / k.sum())


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    size = int(np.ceil(length)) | 1
    k = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = np.cos(angle) * (length - 1) / 2, np.sin(angle) * (length - 1) / 2
    p0 = (round((c - dx) * 8), round((c - dy) * 8))
    p1 = (round((c + dx) * 8), round((c + dy) * 8))
    cv2.line(k, p0, p1, 1.0, 1, cv2.LINE_AA, 3)
    return k / max(float(k.sum()), 1e-6)


def _blur_length(img: np.ndarray, angle: float) -> float:
    """The length in px of a motion blur along ``angle``: where the derivative's
    autocorrelation along that direction is lowest."""
    f = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.7)
    c, s = float(np.cos(angle)), float(np.sin(angle))
    d = c * cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3) + s * cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    d -= d.mean()
    auto = np.fft.fftshift(np.fft.irfft2(np.abs(np.fft.rfft2(d)) ** 2, s=d.shape))
    h, w = auto.shape
    xs = (w // 2 + _DEBLUR_LAGS * c).astype(np.float32)[None]
    ys = (h // 2 + _DEBLUR_LAGS * s).astype(np.float32)[None]
    values = cv2.remap(auto.astype(np.float32), xs, ys, cv2.INTER_LINEAR)[0]
    return float(_DEBLUR_LAGS[int(np.argmin(values))])


def _blur_estimate(v: _Variants) -> tuple[float, float] | None:
    """The frame's motion blur (direction in radians, length in px), or None; computed once."""
    if "blur" not in v.extra:
        angle = _blur_direction(v.work)
        v.extra["blur"] = None if angle is None else (angle, _blur_length(v.work, angle))
    return cast("tuple[float, float] | None", v.extra["blur"])


def _rfft2(img: np.ndarray) -> np.ndarray:
    """``np.fft.rfft2`` of a float32 image (complex64), by OpenCV's faster DFT."""
    full = cv2.dft(np.ascontiguousarray(img, np.float32), flags=cv2.DFT_COMPLEX_OUTPUT)
    return cast(np.ndarray, full.view(np.complex64)[:, : img.shape[1] // 2 + 1, 0])


def _frame_spectrum(v: _Variants) -> np.ndarray:
    if "fft" not in v.extra:
        v.extra["fft"] = _rfft2(v.work.astype(np.float32) / 255)
    return cast(np.ndarray, v.extra["fft"])


def _kernel_spectrum(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The kernel's transfer function on the ``rfft2`` grid of an image of ``shape``."""
    padded = np.zeros(shape, np.float32)
    kh, kw = kernel.shape
    padded[:kh, :kw] = kernel
    return _rfft2(np.roll(padded, (-(kh // 2), -(kw // 2)), (0, 1)))


def _deconvolve(
    spectrum: np.ndarray, kernel: np.ndarray, shape: tuple[int, int], nsr: float
) -> np.ndarray:
    """Wiener deconvolution of a frame (given the ``rfft2`` of its pixel values / 255) by
    ``kernel``, with a constant noise-to-signal ratio ``nsr``."""
    kf = _kernel_spectrum(kernel, shape)
    restored = np.fft.irfft2(spectrum * np.conj(kf) / (np.abs(kf) ** 2 + nsr), s=shape)
    return np.clip(restored * 255, 0, 255).astype(np.uint8)


def _wiener(v: _Variants, kernel_name: str) -> np.ndarray | None:
    key = f"wiener:{kernel_name}"
    if key in v.extra:
        return cast("np.ndarray | None", v.extra[key])
    blur = _blur_estimate(v)
    out = None
    if blur is not None:
        angle, length = blur
        k = _DEBLUR_KERNELS[kernel_name]
        motion = _motion_kernel(max(length + k.length, 2.0), angle + np.radians(k.turn))
        kernel = cv2.filter2D(np.pad(_disk_kernel(k.defocus), motion.shape[0]), -1, motion)
        h, w = v.work.shape
        out = _up2(_deconvolve(_frame_spectrum(v), kernel, (h, w), k.nsr))
    v.extra[key] = out
    return out


def _deblur(v: _Variants, name: str) -> np.ndarray | None:
    if not v.small:
        return None
    kernel_name, sigma = _DEBLUR_STAGES[name]
    restored = _wiener(v, kernel_name)
    return None if restored is None else cv2.GaussianBlur(restored, (0, 0), sigma)


# Restoration, after the deblurring stages: a Wiener-type deconvolution regularised by the
# Laplacian's power (a smoothness prior, which damps the high frequencies, where the noise is,
# more than the low ones) instead of a constant noise-to-signal ratio. Four stages assume a
# defocus disk alone (and run whether or not the frame shows motion), five the estimated motion
# with a defocus disk, tried at lengths and directions around the estimate. The transfer
# functions are computed on the frequency grid directly (the disk's once per frame size, the
# straight motion's as a sinc), and the smoothing that tames the ringing is folded into the same
# filter, so a stage costs one inverse FFT, a 2x upscale and a zxing pass: about 5 ms. The
# stages were chosen on hard-tier frames of seeds 2000-2349 and 3000-3599 (docs/performance.md).
class _Restore(NamedTuple):
    motion: bool  # deconvolve the estimated motion (and skip frames without one), or defocus only
    length: float  # added to the estimated blur length, px
    turn: float  # degrees added to the estimated direction
    defocus: float  # sigma of the defocus disk, px
    smooth: float  # weight of the Laplacian regulariser
    up: int  # upscale factor after the deconvolution
    sigma: float  # Gaussian smoothing, in px of the upscaled image


_RESTORE_STAGES: dict[str, _Restore] = {
    "restore-d1": _Restore(False, 0.0, 0.0, 2.0, 0.008, 2, 1.0),
    "restore-m1": _Restore(True, -1.5, 6.0, 1.6, 0.008, 2, 1.0),
    "restore-m2": _Restore(True, -0.5, -6.0, 1.0, 0.008, 2, 1.0),
    "restore-m3": _Restore(True, 0.5, 6.0, 1.0, 0.008, 2, 1.0),
    "restore-d2": _Restore(False, 0.0, 0.0, 1.6, 0.002, 2, 1.0),
    "restore-m4": _Restore(True, -0.5, 6.0, 1.6, 0.002, 2, 1.0),
    "restore-d3": _Restore(False, 0.0, 0.0, 2.0, 0.008, 2, 1.5),
    "restore-m5": _Restore(True, -0.5, 0.0, 1.6, 0.008, 2, 1.0),
    "restore-d4": _Restore(False, 0.0, 0.0, 1.2, 0.002, 2, 1.5),
}


@functools.cache
def _frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The ``rfft2`` grid's frequencies in cycles per pixel: fy as a column, fx as a row."""
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    return fy, fx


@functools.cache
def _laplacian_power(shape: tuple[int, int]) -> np.ndarray:
    """|FFT of the 5-point Laplacian|^2 on the ``rfft2`` grid: the smoothness prior."""
    fy, fx = _frequencies(shape)
    lap = 4 - 2 * np.cos(2 * np.pi * fx) - 2 * np.cos(2 * np.pi * fy)
    return cast(np.ndarray, lap * lap)


@functools.cache
def _disk_transfer(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """The (real) transfer function of the centred defocus disk on the ``rfft2`` grid."""
    return np.ascontiguousarray(_kernel_spectrum(_disk_kernel(sigma), shape).real)


def _restore_gain(
    shape: tuple[int, int], transfer: np.ndarray, smooth: float, sigma: float
) -> np.ndarray:
    """The filter that deconvolves ``transfer``, regularised by ``smooth`` times the
    Laplacian's power, then smooths with a Gaussian of ``sigma`` px (and scales to 0..255)."""
    fy, fx = _frequencies(shape)
    gauss = np.exp(-2 * (np.pi * sigma) ** 2 * (fx * fx + fy * fy)) * 255
    damping = smooth * _laplacian_power(shape) + 1e-6
    return cast(np.ndarray, (transfer * gauss / (transfer * transfer + damping)).astype(np.float32))


@functools.cache
def _defocus_gain(
    shape: tuple[int, int], defocus: float, smooth: float, sigma: float
) -> np.ndarray:
    return _restore_gain(shape, _disk_transfer(shape, defocus), smooth, sigma)


def _restore(v: _Variants, name: str) -> np.ndarray | None:
    if not v.small:
        return None
    r = _RESTORE_STAGES[name]
    shape = (v.work.shape[0], v.work.shape[1])
    sigma = r.sigma / r.up  # the smoothing in px of the frame
    if r.motion:
        blur = _blur_estimate(v)
        if blur is None:
            return None
        angle, length = blur[0] + np.radians(r.turn), max(blur[1] + r.length, 2.0)
        fy, fx = _frequencies(shape)
        along = fx * np.float32(np.cos(angle)) + fy * np.float32(np.sin(angle))
        transfer = _disk_transfer(shape, r.defocus) * np.sinc(np.float32(length) * along)
        gain = _restore_gain(shape, transfer, r.smooth, sigma)
    else:
        gain = _defocus_gain(shape, r.defocus, r.smooth, sigma)
    restored = np.fft.irfft2(_frame_spectrum(v) * gain, s=shape)
    img = np.clip(restored, 0, 255, out=restored).astype(np.uint8)
    return cv2.resize(img, None, fx=r.up, fy=r.up, interpolation=cv2.INTER_CUBIC)


class _Variants:
    """Preprocessed versions of one frame, each computed once, on first use."""

    def __init__(self, gray: np.ndarray) -> None:
        self.gray = gray
        h, w = gray.shape
        if max(h, w) > _WORK_MAX_SIDE:
            f = _WORK_MAX_SIDE / max(h, w)
            self.work = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        else:
            self.work = gray
        self.small = max(self.work.shape) <= _UPSCALE_MAX_SIDE
        self._cache: dict[str, np.ndarray | None] = {}
        self.extra: dict[str, Any] = {}  # intermediate results shared by several variants

    def get(self, name: str) -> np.ndarray | None:
        if name not in self._cache:
            self._cache[name] = _PREPROCESS[name](self)
        return self._cache[name]


def _needs_small(fn: Callable[[_Variants], np.ndarray]) -> Callable[[_Variants], np.ndarray | None]:
    return lambda v: fn(v) if v.small else None


_PREPROCESS: dict[str, Callable[[_Variants], np.ndarray | None]] = {
    "raw": lambda v: v.gray,
    "work": lambda v: v.work,
    "clahe": lambda v: _clahe(v.work),
    "clahe-invert": lambda v: cv2.bitwise_not(_clahe(v.work)),
    "sharpen": lambda v: _unsharp(v.work, 1.0, 1.0),
    "adaptive": lambda v: _adaptive(v.work, 31, 2),
    "up2": _needs_small(lambda v: _up2(v.work, cv2.INTER_LINEAR)),
    "up2-cubic": _needs_small(lambda v: _up2(v.work)),
    "sharpen-up2": _needs_small(lambda v: _unsharp(_up2(v.work), 3.0, 1.5)),
    "smooth-up2": _needs_small(lambda v: cv2.GaussianBlur(_up2(v.work), (0, 0), 1.5)),
    "clahe-up2": _needs_small(lambda v: _up2(_clahe(v.work))),
    "adaptive-up2": _needs_small(lambda v: _adaptive(_up2(v.work), 51, 0)),
    **{name: functools.partial(_deblur, name=name) for name in _DEBLUR_STAGES},
    **{name: functools.partial(_restore, name=name) for name in _RESTORE_STAGES},
}


class _Stage(NamedTuple):
    decoder: str
    prep: str
    cheap: bool  # also run in fast mode
    either_polarity: bool = True  # zbar: also try the inverted image (doubles a miss's cost)


_CHAIN: tuple[_Stage, ...] = (
    _Stage("zxing", "raw", True),  # zxing tries inverted codes itself
    _Stage("zxing", "up2", True),
    _Stage("zxing", "sharpen-up2", False),
    _Stage("zxing", "smooth-up2", False),
    _Stage("zxing", "clahe-up2", False),
    _Stage("zxing", "adaptive-up2", False),
    _Stage("zxing", "sharpen", False),
    *(_Stage("zxing", name, False) for name in _DEBLUR_STAGES),  # slow: 10-20 ms each
    *(_Stage("zxing", name, False) for name in _RESTORE_STAGES),
    _Stage("pyzbar", "work", True),
    _Stage("pyzbar", "clahe", False),
    _Stage("pyzbar", "adaptive", False),
    _Stage("pyzbar", "sharpen-up2", False, either_polarity=False),
    _Stage("opencv", "work", True),
    _Stage("opencv", "clahe", False),
    _Stage("opencv", "clahe-invert", False),
    _Stage("opencv", "adaptive", False),
    _Stage("opencv", "up2-cubic", False),
)


def chain_stages(*, fast: bool = False) -> list[str]:
    """The stages ``decode_frame`` would try here, in order (``decoder:preprocessing``)."""
    available = available_decoders()
    if fast:
        available = available[:1]
    return [f"{st.decoder}:{st.prep}" for st in _CHAIN if _runs(st, available, fast)]


def _runs(stage: _Stage, available: list[str], fast: bool) -> bool:
    return stage.decoder in available and (stage.cheap or not fast)


# --- frames -----------------------------------------------------------------------------------


def _to_gray(frame: np.ndarray) -> np.ndarray:
    img = np.asarray(frame)
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = np.right_shift(img, 8).astype(np.uint8)
        elif img.dtype.kind == "f":
            scale = 255.0 if float(np.nanmax(img, initial=0.0)) <= 1.0 else 1.0
            img = np.clip(np.nan_to_num(img) * scale, 0, 255).astype(np.uint8)
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.ascontiguousarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected a gray, BGR or BGRA image, got shape {img.shape}")


def _reading_order(found: list[_Found]) -> list[str]:
    """De-duplicate, then sort into rows (top to bottom) and within a row left to right."""
    first: dict[str, _Found] = {}
    for item in found:
        first.setdefault(item[0], item)
    items = sorted(first.values(), key=lambda f: f[2])
    rows: list[list[_Found]] = []
    for item in items:
        if rows and abs(item[2] - rows[-1][0][2]) < max(rows[-1][0][3], item[3]) / 2:
            rows[-1].append(item)
        else:
            rows.append([item])
    return [f[0] for row in rows for f in sorted(row, key=lambda f: f[1])]


def _run_chain(gray: np.ndarray, *, fast: bool) -> tuple[list[str], str | None, str | None]:
    available = available_decoders()
    if fast:
        available = available[:1]
    variants = _Variants(gray)
    for stage in _CHAIN:
        if not _runs(stage, available, fast):
            continue
        img = variants.get(stage.prep)
        if img is None:
            continue
        found = _READERS[stage.decoder](img, stage.either_polarity)
        if found:
            return _reading_order(found), stage.decoder, f"{stage.decoder}:{stage.prep}"
    return [], None, None


def decode_frame(frame: np.ndarray, *, fast: bool = False) -> ScanResult:
    """Read the QR codes in one frame (gray, BGR or BGRA ``numpy`` array).

    ``fast=True`` runs only the cheap stages of the best available decoder: a few
    milliseconds per 640x480 frame, for loops over live camera frames.
    """
    start = time.perf_counter()
    payloads, decoder, stage = _run_chain(_to_gray(frame), fast=fast)
    return ScanResult(payloads, decoder, (time.perf_counter() - start) * 1000, stage)


# --- files, bytes, videos, cameras ------------------------------------------------------------


def _image_from_bytes(data: bytes) -> np.ndarray | None:
    """Decode JPEG/PNG/... bytes to a gray or BGR array; transparent pixels become white."""
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        img = _image_from_pillow(data)
        if img is None:
            return None
    if img.dtype == np.uint16:
        img = np.right_shift(img, 8).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return img


def _image_from_pillow(data: bytes) -> np.ndarray | None:
    """Formats OpenCV cannot read (GIF, some TIFFs): let Pillow try."""
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            rgba = im.convert("RGBA")
            arr = np.asarray(rgba)
    except Exception:  # Pillow raises many kinds of errors for non-images
        return None
    return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)


def decode_image_bytes(data: bytes) -> ScanResult:
    """Read the QR codes in an encoded image (JPEG, PNG, WebP, BMP, TIFF, GIF ...)."""
    start = time.perf_counter()
    img = _image_from_bytes(data)
    if img is None:
        raise UnreadableFileError("not an image this scanner can read")
    payloads, decoder, stage = _run_chain(_to_gray(img), fast=False)
    return ScanResult(payloads, decoder, (time.perf_counter() - start) * 1000, stage)


def _read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def decode_image_file(path: str | Path) -> ScanResult:
    """Read the QR codes in an image file."""
    start = time.perf_counter()
    img = _image_from_bytes(_read_file(path))
    if img is None:
        raise UnreadableFileError(f"{path}: not an image this scanner can read")
    payloads, decoder, stage = _run_chain(_to_gray(img), fast=False)
    return ScanResult(payloads, decoder, (time.perf_counter() - start) * 1000, stage)


def _open_capture(source: int | str) -> Any:
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


def decode_video_file(path: str | Path, max_frames: int = 300) -> ScanResult:
    """Read frames of a video until one yields a QR code, examining at most ``max_frames``.

    Every frame gets the fast stages; every tenth frame (starting with the first) the whole
    chain, so a steady but hard-to-read code is still found.
    """
    start = time.perf_counter()
    p = Path(path)
    if not p.is_file():
        raise UnreadableFileError(f"cannot read {path}: no such file")
    cap = _open_capture(str(p))
    if cap is None:
        raise UnreadableFileError(f"{path}: not a video this scanner can open")
    examined = 0
    try:
        while examined < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            gray = _to_gray(frame)
            payloads, decoder, stage = _run_chain(gray, fast=examined % 10 != 0)
            examined += 1
            if payloads:
                ms = (time.perf_counter() - start) * 1000
                return ScanResult(payloads, decoder, ms, stage, frames=examined)
    finally:
        cap.release()
    if examined == 0:
        raise UnreadableFileError(f"{path}: no frames could be read")
    return ScanResult([], None, (time.perf_counter() - start) * 1000, None, frames=examined)


def iter_camera(index_or_path: int | str) -> Generator[np.ndarray, None, None]:
    """Frames from an OpenCV ``VideoCapture`` (a camera index, a device path, a file or a URL).

    The capture is released when the generator is closed or exhausted. Raises
    ``UnreadableFileError`` if the source cannot be opened.
    """
    cap = _open_capture(index_or_path)
    if cap is None:
        raise UnreadableFileError(f"cannot open camera {index_or_path!r}")
    return _camera_frames(cap)


def _camera_frames(cap: Any) -> Generator[np.ndarray, None, None]:
    try:
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            yield frame
    finally:
        cap.release()
