"""Camera-like frames of payment QR codes, for testing and benchmarking the scanner.

Every frame is a 640x480 picture of an EMV-style payment QR code as a phone or a laptop webcam
would see it: a printed code on paper or a code shown on a phone screen, held at some distance,
rolled and tilted, out of focus or moving, in dim or uneven light, with glare, sensor noise and
JPEG compression. Everything is drawn from a seeded random generator, so ``generate_frame(seed,
tier)`` always returns the same picture.

The three difficulty tiers are fixed ranges of those parameters (see ``TIERS``):

* ``easy``: a steady hand in office light, the code large and nearly square to the camera;
* ``medium``: an everyday scan: any roll, a real tilt, some blur or motion, dimmer or uneven
  light, a reflection now and then, light-on-dark codes;
* ``hard``: a bad scan: small codes seen at a steep angle, clearly out of focus or moving, dark
  rooms with a noisy sensor, strong glare and shadows, bent paper, heavy JPEG.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import qrcode
import qrcode.constants

WIDTH = 640
HEIGHT = 480
_SS = 2  # the scene is drawn at twice the output size, then averaged down (sensor integration)
_FOCAL = 520.0  # pinhole focal length in output pixels: a ~63 degree horizontal field of view


@dataclass(frozen=True)
class TierSpec:
    """The ranges a difficulty tier draws its frame parameters from (pixels at 640x480)."""

    code_px: tuple[float, float]  # width of the symbol (without quiet zone) on the image
    roll_deg: float  # in-plane rotation, +- this
    tilt_deg: tuple[float, float]  # out-of-plane tilt of the code's plane
    defocus: tuple[float, float]  # Gaussian-equivalent blur radius (sigma, px)
    motion_p: float  # probability of motion blur
    motion_px: tuple[float, float]  # motion blur length
    light: tuple[float, float]  # exposure relative to a well-lit scene
    uneven: tuple[float, float]  # depth of the illumination gradient / vignette
    shadow_p: float  # probability of a soft shadow edge across the code
    glare_p: float  # probability of a specular highlight
    glare: tuple[float, float]  # its peak strength (1.0 = full white)
    glare_radius: tuple[float, float]  # its radius as a fraction of the code width
    noise: tuple[float, float]  # sensor noise sigma in 8-bit steps at full light
    jpeg: tuple[int, int]  # JPEG quality
    invert_p: float  # probability of a light-on-dark code
    screen_p: float  # probability the code is on a phone screen rather than paper
    bend_p: float  # probability of curved paper (paper carriers only)


TIERS: dict[str, TierSpec] = {
    "easy": TierSpec(
        code_px=(220, 320),
        roll_deg=30,
        tilt_deg=(0, 15),
        defocus=(0.0, 0.8),
        motion_p=0.0,
        motion_px=(0, 0),
        light=(0.75, 1.0),
        uneven=(0.0, 0.2),
        shadow_p=0.0,
        glare_p=0.0,
        glare=(0, 0),
        glare_radius=(0, 0),
        noise=(1.0, 3.0),
        jpeg=(75, 95),
        invert_p=0.0,
        screen_p=0.3,
        bend_p=0.0,
    ),
    "medium": TierSpec(
        code_px=(150, 290),
        roll_deg=180,
        tilt_deg=(0, 35),
        defocus=(0.3, 1.4),
        motion_p=0.4,
        motion_px=(2, 6),
        light=(0.4, 1.0),
        uneven=(0.1, 0.5),
        shadow_p=0.2,
        glare_p=0.25,
        glare=(0.3, 0.8),
        glare_radius=(0.05, 0.15),
        noise=(2.0, 6.0),
        jpeg=(55, 90),
        invert_p=0.15,
        screen_p=0.4,
        bend_p=0.1,
    ),
    "hard": TierSpec(
        code_px=(110, 270),
        roll_deg=180,
        tilt_deg=(10, 50),
        defocus=(0.6, 2.2),
        motion_p=0.6,
        motion_px=(3, 11),
        light=(0.15, 1.0),
        uneven=(0.2, 0.7),
        shadow_p=0.35,
        glare_p=0.5,
        glare=(0.5, 1.4),
        glare_radius=(0.08, 0.25),
        noise=(4.0, 12.0),
        jpeg=(30, 80),
        invert_p=0.2,
        screen_p=0.5,
        bend_p=0.3,
    ),
}


@dataclass(frozen=True)
class Frame:
    """One generated camera frame and what it shows."""

    image: np.ndarray  # HxWx3 BGR uint8 (or HxW gray)
    payload: str
    tier: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


# --- payloads ---------------------------------------------------------------------------------

_UPPER_NAMES = [
    "BAECKEREI SCHMIDT",
    "CAFE CENTRAL",
    "KIOSK AM MARKT",
    "GREEN GROCER LTD",
    "PHARMACIE DU PARC",
    "TAQUERIA EL SOL",
    "BOOKS AND BEANS",
    "CITY PARKING 24",
    "FARMERS MARKET STALL 7",
    "NORDIC OUTDOOR",
]
_MIXED_NAMES = [
    "Café Müller",
    "Bäckerei Groß",
    "Crème & Brûlée",
    "Señor Taco",
    "Złota Kawa",
    "Ølbaren",
    "Kiosk Łódź",
    "Pâtisserie Noël",
    "Straßencafé",
    "Fish & Chips Co.",
]
_UPPER_CITIES = ["BERLIN", "PARIS", "MADRID", "AMSTERDAM", "WIEN", "LISBOA", "OSLO", "MILANO"]
_MIXED_CITIES = ["München", "Zürich", "Kraków", "Göteborg", "Málaga", "Besançon", "Köln"]
_CURRENCIES = [("978", "DE"), ("978", "FR"), ("978", "ES"), ("756", "CH"), ("985", "PL")]
_MCCS = ["5812", "5411", "5814", "5912", "5942", "7523", "5999"]
_ALNUM = string.ascii_uppercase + string.digits
_BASE62 = string.ascii_letters + string.digits


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), as EMV MPM uses for tag 63."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _tlv(tag: str, value: str) -> str:
    if len(value) > 99:
        raise ValueError(f"tag {tag} value too long ({len(value)})")
    return f"{tag}{len(value):02d}{value}"


def _assemble(fields: list[tuple[str, str]]) -> str:
    body = "".join(_tlv(t, v) for t, v in fields) + "6304"
    return body + f"{crc16_ccitt_false(body.encode()):04X}"


def _random_text(rng: np.random.Generator, alphabet: str, n: int) -> str:
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))


def make_payload(rng: np.random.Generator, *, mixed: bool | None = None) -> str:
    """An EMV Merchant-Presented-Mode payload of 100-250 characters.

    Upper-case payloads fit the QR alphanumeric mode; ``mixed`` ones carry lower-case and
    non-ASCII (UTF-8) text, as a merchant name or a base62 token would.
    """
    if mixed is None:
        mixed = bool(rng.random() < 0.3)
    target = int(rng.integers(100, 251))
    dynamic = bool(rng.random() < 0.8)
    currency, country = _CURRENCIES[int(rng.integers(len(_CURRENCIES)))]
    names = _MIXED_NAMES if mixed else _UPPER_NAMES
    cities = _MIXED_CITIES if mixed else _UPPER_CITIES
    name = names[int(rng.integers(len(names)))]
    city = cities[int(rng.integers(len(cities)))]
    guid = "com.scanpay" if mixed else "COM.SCANPAY"
    merchant_id = "M" + _random_text(rng, string.digits, 9)
    token_alphabet = _BASE62 if mixed else _ALNUM
    bill = "ORD-" + _random_text(rng, string.digits, int(rng.integers(6, 13)))
    terminal = "TILL" + _random_text(rng, string.digits, 2)
    amount = f"{int(rng.integers(50, 50000)) / 100:.2f}"
    mcc = _MCCS[int(rng.integers(len(_MCCS)))]

    token_pool = _random_text(rng, token_alphabet, 80)
    reference_pool = _random_text(rng, token_alphabet, 25)

    def build(token_len: int, ref_len: int) -> str:
        account = _tlv("00", guid) + _tlv("01", merchant_id) + _tlv("02", token_pool[:token_len])
        additional = _tlv("01", bill) + _tlv("07", terminal)
        if ref_len:
            additional += _tlv("05", reference_pool[:ref_len])
        fields = [("00", "01"), ("01", "12" if dynamic else "11"), ("26", account)]
        fields += [("52", mcc), ("53", currency)]
        if dynamic:
            fields.append(("54", amount))
        fields += [("58", country), ("59", name), ("60", city), ("62", additional)]
        return _assemble(fields)

    # Fill towards the target length with the token first, then a reference label.
    room = max(0, target - len(build(0, 0)))
    max_token = 99 - len(_tlv("00", guid) + _tlv("01", merchant_id)) - 4
    token_len = max(8, min(room, max_token, 60))
    room -= token_len
    ref_len = min(room - 4, 25) if room > 4 else 0
    return build(token_len, ref_len)


# --- QR rendering -----------------------------------------------------------------------------

_ECC = [
    qrcode.constants.ERROR_CORRECT_L,
    qrcode.constants.ERROR_CORRECT_M,
    qrcode.constants.ERROR_CORRECT_M,
    qrcode.constants.ERROR_CORRECT_Q,
]
_ECC_NAMES = {
    qrcode.constants.ERROR_CORRECT_L: "L",
    qrcode.constants.ERROR_CORRECT_M: "M",
    qrcode.constants.ERROR_CORRECT_Q: "Q",
    qrcode.constants.ERROR_CORRECT_H: "H",
}


def qr_modules(payload: str, *, error_correction: int = qrcode.constants.ERROR_CORRECT_M) -> Any:
    """The QR symbol's module matrix (True = dark), without the quiet zone."""
    qr = qrcode.QRCode(error_correction=error_correction, border=0)
    qr.add_data(payload.encode("utf-8"))
    qr.make(fit=True)
    return np.array(qr.get_matrix(), dtype=bool)


def render_qr_image(payload: str, *, module_px: int = 8, border: int = 4) -> np.ndarray:
    """A clean, upright gray image of the payload's QR code (black on white)."""
    modules = qr_modules(payload)
    img = np.where(modules, 0, 255).astype(np.uint8)
    img = np.pad(img, border, constant_values=255)
    return cv2.resize(img, None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)


# --- scene ------------------------------------------------------------------------------------


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(lo + (hi - lo) * rng.random())


def _rotation(roll: float, tilt: float, tilt_dir: float) -> np.ndarray:
    """Roll about the optical axis after tilting the plane by ``tilt`` about an in-plane axis."""
    ax = np.array([math.cos(tilt_dir), math.sin(tilt_dir), 0.0])
    rvec = ax * tilt
    r_tilt, _ = cv2.Rodrigues(rvec)
    c, s = math.cos(roll), math.sin(roll)
    r_roll = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return np.asarray(r_roll @ r_tilt)


def _project(points: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    p = points @ rot.T + trans
    return np.stack(
        [_FOCAL * p[:, 0] / p[:, 2] + WIDTH / 2, _FOCAL * p[:, 1] / p[:, 2] + HEIGHT / 2], axis=1
    )


def _inside(pts: np.ndarray, margin: float = 2.0) -> bool:
    xs, ys = pts[:, 0], pts[:, 1]
    return bool(
        xs.min() > margin
        and xs.max() < WIDTH - margin
        and ys.min() > margin
        and ys.max() < HEIGHT - margin
    )


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A cluttered, smooth-ish scene behind the carrier (float BGR in 0..1)."""
    low = rng.random((4, 5, 3)).astype(np.float32) * 0.6 + 0.1
    low = 0.5 * low + 0.5 * low.mean(axis=2, keepdims=True)  # real rooms are not that colorful
    bg = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 9))):
        rgb = rng.random(3) * 0.8 + 0.1
        color = tuple(float(c) for c in 0.5 * rgb + 0.5 * rgb.mean())
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(-w // 3, w // 3)), y0 + int(rng.integers(-h // 3, h // 3))
        if rng.random() < 0.5:
            cv2.rectangle(bg, (x0, y0), (x1, y1), color, -1)
        else:
            cv2.line(bg, (x0, y0), (x1, y1), color, int(rng.integers(1, 7)))
    # Text-like clutter: small dark dashes, a plausible false-positive source for finders.
    for _ in range(int(rng.integers(0, 30))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.line(bg, (x0, y0), (x0 + int(rng.integers(2, 15)), y0), (0.1, 0.1, 0.1), 1)
    bg = np.clip(bg, 0, 1)
    return np.asarray(bg, dtype=np.float32)


def _carrier(
    rng: np.random.Generator, modules: np.ndarray, spec: TierSpec, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """The flat object carrying the code: a paper slip or a phone screen.

    Returns (BGR float image, 0/1 mask of the carrier, symbol rectangle x0, y0, x1, y1).
    """
    n = modules.shape[0]
    screen = bool(rng.random() < spec.screen_p)
    inverted = bool(rng.random() < spec.invert_p)
    params.update(carrier="screen" if screen else "paper", inverted=inverted)
    mpx = 10  # source pixels per module
    quiet = 4 if not inverted else float(rng.uniform(2, 4))
    margin = float(rng.uniform(0.5, 6.0))  # carrier beyond the quiet zone, in modules
    side = n + 2 * (quiet + margin)
    size = round(side * mpx)
    origin = (quiet + margin) * mpx
    sym: np.ndarray = np.where(modules, 1.0, 0.0).astype(np.float32)
    sym = cv2.resize(sym, (n * mpx, n * mpx), interpolation=cv2.INTER_NEAREST)
    if not screen:
        # Ink spread or thin print: dark modules grow or shrink by up to ~15%.
        k = int(rng.integers(-2, 3))
        if k:
            kernel = np.ones((abs(k) + 1, abs(k) + 1), np.uint8)
            op = cv2.dilate if k > 0 else cv2.erode
            sym = op(sym, kernel)
    ink = np.zeros((size, size), np.float32)
    o = round(origin)
    ink[o : o + sym.shape[0], o : o + sym.shape[1]] = sym
    if inverted:
        ink = 1.0 - ink  # light modules on a dark field
    if screen:
        black = float(rng.uniform(0.02, 0.12))
        white = float(rng.uniform(0.85, 1.0))
        tint = np.array([1.0, float(rng.uniform(0.95, 1.0)), float(rng.uniform(0.88, 1.0))])
        lum = white + (black - white) * ink
        img = lum[..., None] * tint[None, None, :].astype(np.float32)
        # Sub-pixel stripes of the display: moire once the camera resamples them.
        pitch = int(rng.integers(3, 7))
        stripes = np.ones((size, size, 3), np.float32)
        for c in range(3):
            cols = np.arange(size) % pitch
            stripes[:, :, 2 - c] *= np.where(cols // max(1, pitch // 3) == c, 1.0, 0.55)[None, :]
        img = img * (0.7 + 0.3 * stripes)
        # Bezel around the screen area.
        bezel = int(mpx * rng.uniform(1.0, 3.0))
        full = np.full((size + 2 * bezel, size + 2 * bezel, 3), 0.04, np.float32)
        full[bezel : bezel + size, bezel : bezel + size] = img
        img, shift = full, bezel
    else:
        paper = np.array(
            [float(rng.uniform(0.72, 0.88)), float(rng.uniform(0.78, 0.92)), 0.0], np.float32
        )
        paper[2] = paper[1] + float(rng.uniform(0.0, 0.05))
        ink_level = float(rng.uniform(0.04, 0.2))
        img = paper[None, None, :] + (ink_level - paper[None, None, :]) * ink[..., None]
        texture = cv2.GaussianBlur(rng.normal(0, 0.02, (size, size)).astype(np.float32), (0, 0), 2)
        img = img + texture[..., None]
        shift = 0
    img = np.clip(img, 0, 1).astype(np.float32)
    mask = np.ones(img.shape[:2], np.float32)
    x0 = y0 = o + shift
    return img, mask, (x0, y0, x0 + n * mpx, y0 + n * mpx)


def _bend(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Curve the paper: rows sag by a sine profile (a slip held between two fingers)."""
    h, w = img.shape[:2]
    amp = float(rng.uniform(0.01, 0.035)) * w
    params["bend_px_src"] = round(amp, 1)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    dy = amp * np.sin(np.pi * xs / w)
    map_y = ys - dy + amp / 2
    img = cv2.remap(img, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.remap(mask, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return img, mask


def _disk_kernel(sigma: float) -> np.ndarray:
    """A defocus kernel: a uniform disk (lens aperture) with the given RMS radius."""
    radius = max(1.0, sigma * math.sqrt(2.0))
    r = math.ceil(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = np.clip(radius + 0.5 - np.sqrt(xx * xx + yy * yy), 0, 1).astype(np.float32)
    return np.asarray(k / k.sum())


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    size = math.ceil(length) | 1
    k = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = math.cos(angle) * (length - 1) / 2, math.sin(angle) * (length - 1) / 2
    cv2.line(
        k,
        (round((c - dx) * 8), round((c - dy) * 8)),
        (round((c + dx) * 8), round((c + dy) * 8)),
        1.0,
        1,
        cv2.LINE_AA,
        3,
    )
    return k / max(float(k.sum()), 1e-6)


def generate_frame(seed: int, tier: str = "medium", *, gray: bool = False) -> Frame:
    """One 640x480 camera-like frame of a payment QR code, the same for the same arguments."""
    spec = TIERS[tier]
    rng = np.random.default_rng([seed, list(TIERS).index(tier), 0x5CA9])
    payload = make_payload(rng)
    params: dict[str, Any] = {"payload_len": len(payload)}
    ecc = _ECC[int(rng.integers(len(_ECC)))]
    modules = qr_modules(payload, error_correction=ecc)
    n = modules.shape[0]
    params.update(ecc=_ECC_NAMES[ecc], modules=n)

    src, mask, (sx0, sy0, sx1, sy1) = _carrier(rng, modules, spec, params)
    if params["carrier"] == "paper" and rng.random() < spec.bend_p:
        src, mask = _bend(rng, src, mask, params)

    # Pose: choose roll, tilt and distance so the symbol is code_px wide, then a position
    # that keeps the whole symbol (and most of its quiet zone) inside the frame.
    code_px = _u(rng, spec.code_px)
    roll = math.radians(float(rng.uniform(-spec.roll_deg, spec.roll_deg)))
    tilt = math.radians(_u(rng, spec.tilt_deg))
    tilt_dir = float(rng.uniform(0, 2 * math.pi))
    rot = _rotation(roll, tilt, tilt_dir)
    scale = 1.0 / (sx1 - sx0)  # world units per source pixel: the symbol is 1 unit wide
    cx, cy = (sx0 + sx1) / 2, (sy0 + sy1) / 2
    z = _FOCAL / code_px
    sym_corners = np.array(
        [[sx0, sy0], [sx1, sy0], [sx1, sy1], [sx0, sy1]], dtype=np.float64
    ) - np.array([cx, cy])
    sym_world = np.hstack([sym_corners * scale, np.zeros((4, 1))])
    quiet = 2.0 * (sx1 - sx0) / n * scale  # two modules of quiet zone must stay in view
    grown = sym_world * (1 + 2 * quiet)
    trans = np.array([0.0, 0.0, z])
    for _ in range(50):
        px = float(rng.uniform(0.2, 0.8)) * WIDTH
        py = float(rng.uniform(0.2, 0.8)) * HEIGHT
        trans = np.array([(px - WIDTH / 2) * z / _FOCAL, (py - HEIGHT / 2) * z / _FOCAL, z])
        if _inside(_project(grown, rot, trans)):
            break
    else:
        trans = np.array([0.0, 0.0, z])
        # Too big for the frame at this pose: back off until it fits.
        while not _inside(_project(grown, rot, trans)):
            trans[2] *= 1.05
    h_src, w_src = src.shape[:2]
    src_corners = np.array([[0, 0], [w_src, 0], [w_src, h_src], [0, h_src]], dtype=np.float64)
    world = np.hstack([(src_corners - np.array([cx, cy])) * scale, np.zeros((4, 1))])
    dst = _project(world, rot, trans) * _SS
    homography = cv2.getPerspectiveTransform(src_corners.astype(np.float32), dst.astype(np.float32))
    sym_img = _project(sym_world, rot, trans)
    widths = [np.linalg.norm(sym_img[(i + 1) % 4] - sym_img[i]) for i in range(4)]
    params.update(
        code_px=round(float(np.mean(widths)), 1),
        module_px=round(float(min(widths)) / n, 2),
        roll_deg=round(math.degrees(roll), 1),
        tilt_deg=round(math.degrees(tilt), 1),
    )

    # Warp the carrier (premultiplied by its coverage) at twice the size, average it down,
    # then lay it over the background.
    size = (WIDTH * _SS, HEIGHT * _SS)
    rgba = np.dstack([src * mask[..., None], mask])
    warped = cv2.warpPerspective(rgba, homography, size, flags=cv2.INTER_LINEAR)
    warped = cv2.resize(warped, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    coverage = warped[..., 3]
    bg = _background(rng, HEIGHT, WIDTH)
    scene = warped[..., :3] + bg * (1 - coverage)[..., None]

    # Light: exposure, a smooth gradient with vignetting, maybe a soft shadow edge.
    light = _u(rng, spec.light)
    uneven = _u(rng, spec.uneven)
    yy, xx = (g.astype(np.float32) for g in np.mgrid[0:HEIGHT, 0:WIDTH])
    xn, yn = (xx - WIDTH / 2) / WIDTH, (yy - HEIGHT / 2) / HEIGHT
    ang = float(rng.uniform(0, 2 * math.pi))
    grad = (xn * math.cos(ang) + yn * math.sin(ang)) + 0.5  # 0..1 across the frame
    vignette = xn * xn + yn * yn
    field_ = 1.0 - uneven * np.clip(0.7 * grad + 0.6 * vignette, 0, 1)
    params.update(light=round(light, 2), uneven=round(uneven, 2))
    if rng.random() < spec.shadow_p:
        # A shadow edge through the symbol region (a hand or the phone itself).
        c = sym_img.mean(axis=0)
        a = float(rng.uniform(0, 2 * math.pi))
        off = float(rng.uniform(-0.3, 0.3)) * params["code_px"]
        d = (xx - c[0]) * math.cos(a) + (yy - c[1]) * math.sin(a) - off
        softness = float(rng.uniform(3, 25))
        depth = float(rng.uniform(0.35, 0.7))
        field_ = field_ * (1 - depth / (1 + np.exp(-d / softness)))
        params["shadow"] = round(depth, 2)
    screen = params["carrier"] == "screen"
    if screen:
        # A screen emits its own light: only the surroundings follow the room's light.
        emit = coverage
        room = light * field_
        screen_level = float(rng.uniform(0.8, 1.15))
        gain = emit * screen_level + (1 - emit) * room
    else:
        gain = light * field_
    img = scene * gain[..., None]

    if rng.random() < spec.glare_p:
        c = sym_img.mean(axis=0) + rng.uniform(-0.45, 0.45, 2) * params["code_px"]
        r = _u(rng, spec.glare_radius) * params["code_px"]
        strength = _u(rng, spec.glare)
        aspect = float(rng.uniform(0.4, 1.0))
        a = float(rng.uniform(0, math.pi))
        u = (xx - c[0]) * math.cos(a) + (yy - c[1]) * math.sin(a)
        v = -(xx - c[0]) * math.sin(a) + (yy - c[1]) * math.cos(a)
        blob = np.exp(-((u / r) ** 2 + (v / (r * aspect)) ** 2))
        img = img + strength * blob[..., None]
        params["glare"] = round(strength, 2)

    # Optics: defocus, then motion during the exposure.
    sigma = _u(rng, spec.defocus)
    if sigma > 0.5:
        img = cv2.filter2D(img, -1, _disk_kernel(sigma))
    elif sigma > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    params["defocus"] = round(sigma, 2)
    if rng.random() < spec.motion_p:
        length = _u(rng, spec.motion_px)
        angle = float(rng.uniform(0, math.pi))
        img = cv2.filter2D(img, -1, _motion_kernel(length, angle))
        params.update(motion_px=round(length, 1), motion_deg=round(math.degrees(angle), 1))

    # Sensor: auto-exposure lifts a dark scene part-way, amplifying the noise with it.
    ae = min(1.0 / max(light, 1e-3), 3.0) ** 0.6
    sigma_n = _u(rng, spec.noise) / 255.0
    img = img.astype(np.float32)
    shot = rng.standard_normal(img.shape, dtype=np.float32) * np.sqrt(
        np.clip(img, 0, None) * np.float32(0.0002) + np.float32(sigma_n * sigma_n)
    )
    img = (img + shot) * ae
    params.update(noise=round(sigma_n * 255, 1), ae=round(ae, 2))
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)

    quality = int(rng.integers(spec.jpeg[0], spec.jpeg[1] + 1))
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:  # pragma: no cover - OpenCV always round-trips a plain BGR array
        raise RuntimeError("JPEG round trip failed")
    out = decoded
    params["jpeg"] = quality
    if gray:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    return Frame(image=out, payload=payload, tier=tier, seed=seed, params=params)


def iter_frames(tier: str, count: int, *, start: int = 0, gray: bool = False) -> Iterator[Frame]:
    """``count`` frames of one tier with consecutive seeds from ``start``."""
    for seed in range(start, start + count):
        yield generate_frame(seed, tier, gray=gray)
