"""Printable static QR: a PNG and a one-page PDF to stick on the counter."""

from __future__ import annotations

from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont
from qrcode.constants import ERROR_CORRECT_M

from pos_terminal.client import StaticQr


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def render_static_qr(qr: StaticQr, *, box: int = 16) -> Image.Image:
    """The code (quiet zone 4) with the shop's name and "Scan to pay" under it."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box, border=4)
    code.add_data(qr.qr_payload)
    code.make(fit=True)
    image = code.make_image(fill_color="black", back_color="white").get_image().convert("RGB")
    width = image.width
    caption = [(qr.merchant_name, 56), ("Scan to pay", 40)]
    if qr.terminal_label:
        caption.append((qr.terminal_label, 32))
    height = image.height + sum(size + 16 for _, size in caption) + 32
    page = Image.new("RGB", (width, height), "white")
    page.paste(image, (0, 0))
    draw = ImageDraw.Draw(page)
    y = image.height
    for text, size in caption:
        font = _font(size)
        left, _top, right, _bottom = draw.textbbox((0, 0), text, font=font)
        draw.text(((width - (right - left)) // 2, y), text, fill="black", font=font)
        y += size + 16
    return page


def save_static_qr(qr: StaticQr, directory: Path) -> tuple[Path, Path]:
    """Write ``static-qr.png`` and ``static-qr.pdf`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    page = render_static_qr(qr)
    png = directory / "static-qr.png"
    pdf = directory / "static-qr.pdf"
    page.save(png)
    page.save(pdf, "PDF", resolution=150.0)
    return png, pdf
