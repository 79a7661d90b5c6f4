"""Distinct, photo-like test images for `dari bench media`, made with Pillow.

JPEGs look like phone camera shots (smooth gradients, shapes, sensor-like grain; EXIF with an
orientation, camera make/model and a GPS position, which the server must strip); PNGs look like
phone screenshots (flat colours, chat bubbles, text; a tEXt chunk). Every image is drawn from its
own seed, so no two are alike and content addressing cannot skip the server's work.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

ORIENTATION, MAKE, MODEL, GPS_IFD = 0x0112, 0x010F, 0x0110, 0x8825


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def camera_jpeg(seed: int, width: int, height: int, *, rotated: bool) -> bytes:
    """A camera-like JPEG (quality 90). `rotated` stores it sideways with EXIF orientation 6, as phones do."""
    rng = random.Random(seed)
    grad = Image.linear_gradient("L")
    bands = [grad.rotate(rng.randrange(360)).resize((width, height)) for _ in range(3)]
    img = Image.merge("RGB", bands)
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y, s = rng.randrange(width), rng.randrange(height), rng.randrange(width // 80 + 4, width // 5 + 8)
        draw.ellipse((x, y, x + s, y + int(s * rng.uniform(0.5, 1.5))), fill=_colour(rng))
    noise = Image.effect_noise((max(1, width // 2), max(1, height // 2)), 30 + seed % 20)
    img = Image.blend(img, noise.resize((width, height)).convert("RGB"), 0.12)
    exif = Image.Exif()
    exif[MAKE], exif[MODEL] = "dari-bench", f"camera {seed}"
    if rotated:
        exif[ORIENTATION] = 6
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (37.0, 33.0, float(seed % 60)), 3: "E", 4: (126.0, 58.0, 2.0)})
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def screenshot_png(seed: int, width: int, height: int) -> bytes:
    """A phone-screenshot-like PNG: a chat screen with bubbles and text, plus a tEXt chunk."""
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), _colour(rng))
    draw = ImageDraw.Draw(img)
    bar = height // 14
    draw.rectangle((0, 0, width, bar), fill=_colour(rng))
    y = bar + 20
    while y < height - bar:
        h = rng.randrange(bar // 2, bar * 2)
        mine = rng.random() < 0.5
        x0 = width // 3 if mine else 20
        draw.rounded_rectangle((x0, y, x0 + width * 2 // 3 - 20, y + h), radius=24,
                               fill=(255, 235, 0) if mine else (255, 255, 255))
        for line in range(max(1, h // 30)):
            draw.text((x0 + 16, y + 10 + line * 28), f"{seed}:{rng.getrandbits(48):x} 다리", fill=(0, 0, 0))
        y += h + rng.randrange(10, 40)
    # A shared photo in the chat: the part of a real screenshot that makes the PNG heavy.
    pw, ph = width * 2 // 3, height // 5
    photo = Image.blend(Image.linear_gradient("L").resize((pw, ph)).convert("RGB"),
                        Image.effect_noise((pw, ph), 40 + seed % 20).convert("RGB"), 0.3)
    img.paste(photo, (rng.randrange(width - pw), rng.randrange(bar, height - ph)))
    meta = PngInfo()
    meta.add_text("Comment", f"dari bench screenshot {seed}")
    out = io.BytesIO()
    img.save(out, "PNG", pnginfo=meta)
    return out.getvalue()
