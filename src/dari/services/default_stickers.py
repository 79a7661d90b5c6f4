"""dari's own sticker pack: 다리 (Dari), a small arch bridge with a face, in a few moods.

Original art, drawn here with Pillow shapes at import time, so the repository carries code rather
than binary images and nothing is borrowed from anyone. Drawn at 2x and scaled down for smooth
edges. The pack goes through the same validation as any operator's pack.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
S = 2                                   # supersampling
BODY = (242, 148, 84)                   # warm brick
BODY_DARK = (196, 104, 52)
WATER = (120, 190, 230)
INK = (52, 40, 36)
CHEEK = (255, 150, 150)

Face = Callable[[ImageDraw.ImageDraw, int], None]


def _bridge(d: ImageDraw.ImageDraw, bounce: int = 0, body: tuple[int, int, int] = BODY) -> None:
    k = S
    y0 = bounce * k
    d.ellipse((20 * k, 200 * k, 236 * k, 236 * k), fill=WATER)                                  # river
    d.rounded_rectangle((24 * k, 70 * k + y0, 232 * k, 120 * k + y0), radius=22 * k, fill=body)  # deck
    d.rounded_rectangle((36 * k, 100 * k + y0, 84 * k, 214 * k), radius=14 * k, fill=body)        # left leg
    d.rounded_rectangle((172 * k, 100 * k + y0, 220 * k, 214 * k), radius=14 * k, fill=body)      # right leg
    d.pieslice((78 * k, 116 * k + y0, 178 * k, 236 * k + y0), 180, 360, fill=body)               # arch
    d.pieslice((96 * k, 140 * k + y0, 160 * k, 236 * k + y0), 180, 360, fill=WATER)             # under the arch
    d.rectangle((96 * k, 188 * k + y0, 160 * k, 214 * k), fill=WATER)
    for x in range(40, 220, 30):                                                                # railing posts
        d.rounded_rectangle((x * k, 56 * k + y0, (x + 8) * k, 76 * k + y0), radius=3 * k, fill=BODY_DARK)
    d.rounded_rectangle((32 * k, 52 * k + y0, 224 * k, 60 * k + y0), radius=4 * k, fill=BODY_DARK)


def _eyes(d: ImageDraw.ImageDraw, y: int, style: str = "dot") -> None:
    k = S
    for cx in (100, 156):
        if style == "dot":
            d.ellipse(((cx - 7) * k, (y - 9) * k, (cx + 7) * k, (y + 9) * k), fill=INK)
            d.ellipse(((cx - 2) * k, (y - 6) * k, (cx + 3) * k, (y - 1) * k), fill=(255, 255, 255))
        elif style == "happy":
            d.arc(((cx - 10) * k, (y - 6) * k, (cx + 10) * k, (y + 12) * k), 200, 340, fill=INK, width=4 * k)
        elif style == "closed":
            d.line(((cx - 10) * k, y * k, (cx + 10) * k, y * k), fill=INK, width=4 * k)
        elif style == "wide":
            d.ellipse(((cx - 10) * k, (y - 12) * k, (cx + 10) * k, (y + 12) * k), fill=(255, 255, 255),
                      outline=INK, width=3 * k)
            d.ellipse(((cx - 4) * k, (y - 4) * k, (cx + 4) * k, (y + 4) * k), fill=INK)


def _heart(d: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fill: tuple[int, int, int]) -> None:
    k = S
    d.ellipse(((cx - r) * k, (cy - r) * k, cx * k, cy * k), fill=fill)
    d.ellipse((cx * k, (cy - r) * k, (cx + r) * k, cy * k), fill=fill)
    d.polygon([((cx - r) * k, (cy - r // 3) * k), ((cx + r) * k, (cy - r // 3) * k), (cx * k, (cy + r) * k)],
              fill=fill)


def _cheeks(d: ImageDraw.ImageDraw, y: int) -> None:
    for cx in (76, 180):
        d.ellipse(((cx - 9) * S, (y - 5) * S, (cx + 9) * S, (y + 5) * S), fill=CHEEK)


def _mouth(d: ImageDraw.ImageDraw, y: int, style: str) -> None:
    k = S
    if style == "smile":
        d.arc((114 * k, (y - 10) * k, 142 * k, (y + 8) * k), 20, 160, fill=INK, width=4 * k)
    elif style == "frown":
        d.arc((114 * k, y * k, 142 * k, (y + 16) * k), 200, 340, fill=INK, width=4 * k)
    elif style == "open":
        d.ellipse((120 * k, (y - 6) * k, 136 * k, (y + 10) * k), fill=INK)
    elif style == "grin":
        d.chord((110 * k, (y - 12) * k, 146 * k, (y + 14) * k), 0, 180, fill=INK)


def _draw(face: Face, bounce: int = 0, body: tuple[int, int, int] = BODY) -> Image.Image:
    img = Image.new("RGBA", (SIZE * S, SIZE * S), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    _bridge(d, bounce, body)
    face(d, bounce)
    return img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _happy(d: ImageDraw.ImageDraw, b: int) -> None:
    _eyes(d, 88 + b, "happy")
    _cheeks(d, 100 + b)
    _mouth(d, 104 + b, "grin")


def _hello(d: ImageDraw.ImageDraw, b: int) -> None:
    _eyes(d, 88 + b)
    _cheeks(d, 100 + b)
    _mouth(d, 102 + b, "smile")


def _love(d: ImageDraw.ImageDraw, b: int) -> None:
    for cx in (100, 156):
        _heart(d, cx, 90 + b, 10, (230, 60, 90))
    _mouth(d, 104 + b, "smile")
    _heart(d, 214, 30, 14, (230, 60, 90))


def _sad(d: ImageDraw.ImageDraw, b: int) -> None:
    _eyes(d, 90 + b, "closed")
    _mouth(d, 100 + b, "frown")
    d.ellipse((150 * S, 98 * S, 160 * S, 114 * S), fill=WATER)   # a tear


def _angry(d: ImageDraw.ImageDraw, b: int) -> None:
    _eyes(d, 92 + b)
    for x0, x1 in ((88, 112), (168, 144)):
        d.line((x0 * S, 74 * S, x1 * S, 82 * S), fill=INK, width=5 * S)
    _mouth(d, 102 + b, "frown")


def _sleepy(d: ImageDraw.ImageDraw, b: int) -> None:
    _eyes(d, 92 + b, "closed")
    _mouth(d, 104 + b, "open")
    for i, (x, y, r) in enumerate(((196, 40, 10), (214, 22, 7), (228, 8, 5))):
        d.line(((x - r) * S, (y - r) * S, (x + r) * S, (y - r) * S), fill=INK, width=(3 - i // 2) * S)
        d.line(((x + r) * S, (y - r) * S, (x - r) * S, (y + r) * S), fill=INK, width=(3 - i // 2) * S)
        d.line(((x - r) * S, (y + r) * S, (x + r) * S, (y + r) * S), fill=INK, width=(3 - i // 2) * S)


def _surprised(d: ImageDraw.ImageDraw, b: int) -> None:
    _eyes(d, 88 + b, "wide")
    _mouth(d, 106 + b, "open")


def _ok(d: ImageDraw.ImageDraw, b: int) -> None:
    _hello(d, b)
    d.ellipse((196 * S, 10 * S, 244 * S, 58 * S), outline=(90, 170, 90), width=7 * S)   # a big "O.K." circle


MOODS: list[tuple[str, str, Face]] = [
    ("hello", "👋", _hello), ("happy", "😄", _happy), ("love", "😍", _love), ("sad", "😢", _sad),
    ("angry", "😠", _angry), ("sleepy", "😴", _sleepy), ("surprised", "😮", _surprised), ("ok", "👌", _ok),
]


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _bouncing() -> bytes:
    """An animated WebP: Dari hops (the pack's one animated sticker)."""
    frames = [_draw(_happy, round(6 * math.sin(i / 8 * 2 * math.pi))) for i in range(8)]
    out = io.BytesIO()
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:], duration=90, loop=0, quality=85)
    return out.getvalue()


VERSION = 1   # bump when the drawings change: caches of older renderings are then ignored


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dari" / f"default-stickers-v{VERSION}"


def files() -> dict[str, bytes]:
    """The pack as a folder holds it, drawn once per machine and then read from the user's cache
    (every test server would otherwise spend most of a second drawing the same pictures)."""
    cache = _cache_dir()
    try:
        names = json.loads((cache / "index.json").read_text())
        return {n: (cache / n).read_bytes() for n in names}
    except (OSError, ValueError):
        pass
    out = draw()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for name, data in out.items():
            tmp = cache / f".{name}.{os.getpid()}"
            tmp.write_bytes(data)
            tmp.replace(cache / name)
        tmp = cache / f".index.{os.getpid()}"
        tmp.write_text(json.dumps(sorted(out)))
        tmp.replace(cache / "index.json")
    except OSError:
        pass   # read-only home: draw again next time
    return out


def draw() -> dict[str, bytes]:
    """The pack as a folder would hold it: manifest.json plus images."""
    out = {f"{name}.png": _png(_draw(face)) for name, _, face in MOODS}
    out["hop.webp"] = _bouncing()
    manifest = {"slug": "dari-bridge", "title": "다리 Dari", "author": "the dari project",
                "stickers": [{"file": f"{name}.png", "emoji": emoji} for name, emoji, _ in MOODS]
                + [{"file": "hop.webp", "emoji": "🎉"}]}
    out["manifest.json"] = json.dumps(manifest, ensure_ascii=False).encode()
    return out
