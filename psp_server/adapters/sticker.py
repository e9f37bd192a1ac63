"""A printable static-QR sticker (PNG or PDF): the code, the shop's name, and a line
telling people what to do."""

from __future__ import annotations

from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont

_FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for p in _FONT_PATHS:
        if Path(p).exists():
            return ImageFont.truetype(p, size)
    return ImageFont.load_default()


def render(payload: str, title: str, subtitle: str, out: Path) -> Path:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=16, border=4)
    code.add_data(payload)
    code.make(fit=True)
    img = code.make_image(fill_color="black", back_color="white").get_image().convert("RGB")
    width = max(img.width, 900)
    sheet = Image.new("RGB", (width, img.height + 320), "white")
    draw = ImageDraw.Draw(sheet)
    big, small = _font(56), _font(32)
    draw.text((width // 2, 50), title[:40], fill="black", font=big, anchor="mm")
    sheet.paste(img, ((width - img.width) // 2, 100))
    y = 100 + img.height + 40
    draw.text(
        (width // 2, y),
        "Scan to pay with your ScanPay wallet",
        fill="black",
        font=small,
        anchor="mm",
    )
    draw.text((width // 2, y + 60), subtitle[:60], fill="#444444", font=small, anchor="mm")
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".pdf":
        sheet.save(out, "PDF", resolution=300.0)
    elif suffix == ".png":
        sheet.save(out, "PNG")
    else:
        raise ValueError("the sticker file must end in .png or .pdf")
    return out
