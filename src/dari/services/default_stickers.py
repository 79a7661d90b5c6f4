"""dari's own sticker pack: sixteen distinct, expressive stickers (laughing, crying, angry, love,
thumbs up, OK, sorry, thanks, surprised, sleepy, celebrate, ㅋㅋㅋ, fighting!, hi, coffee break) and
다리 (Dari), the small arch bridge, hopping.

Original art, drawn here with Pillow shapes at import time, so the repository carries code rather
than binary images and nothing is borrowed from anyone. Each sticker differs in colour, silhouette
and prop, not only in its face, so they stay tellable apart at 64 px. Hangul is drawn as strokes
(no CJK font needed); Latin text uses Pillow's bundled font. Drawn at 2x and scaled down for smooth
edges. The pack goes through the same validation as any operator's pack.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = 256
S = 2                                   # supersampling
INK = (52, 40, 36)
WHITE = (255, 255, 255)
YELLOW = (255, 205, 64)
ORANGE = (255, 140, 40)
RED = (230, 60, 60)
PINK = (255, 120, 170)
BLUE = (90, 170, 240)
GREEN = (70, 185, 100)
PURPLE = (150, 110, 220)
NAVY = (40, 50, 110)
SKIN = (255, 214, 170)
BROWN = (150, 95, 60)
CHEEK = (255, 150, 150)
WATER = (120, 190, 230)

Pt = tuple[float, float]
Draw = Callable[[ImageDraw.ImageDraw], None]
Colour = tuple[int, int, int]


def k(*v: float) -> tuple[float, ...]:
    """Design coordinates (0-256) to the supersampled canvas."""
    return tuple(x * S for x in v)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size * S)


def text(d: ImageDraw.ImageDraw, cx: float, cy: float, s: str, size: int, fill: Colour,
         outline: Colour = INK, stroke: int = 5) -> None:
    d.text((cx * S, cy * S), s, font=_font(size), fill=fill, anchor="mm", stroke_width=stroke * S, stroke_fill=outline)


def line(d: ImageDraw.ImageDraw, pts: Sequence[Pt], fill: Colour = INK, w: int = 6) -> None:
    d.line([(x * S, y * S) for x, y in pts], fill=fill, width=w * S, joint="curve")
    for x, y in (pts[0], pts[-1]):   # round caps
        d.ellipse(k(x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=fill)


def face(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: Colour) -> None:
    d.ellipse(k(cx - r, cy - r, cx + r, cy + r), fill=fill, outline=INK, width=5 * S)


def heart(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: Colour, outline: Colour | None = INK) -> None:
    pts = []
    for i in range(64):
        t = 2 * math.pi * i / 64
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append(((cx + x * r / 16) * S, (cy + y * r / 16) * S))
    d.polygon(pts, fill=fill, outline=outline, width=4 * S if outline else 0)


def star(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: Colour, points: int = 5) -> None:
    pts = []
    for i in range(points * 2):
        a = math.pi * i / points - math.pi / 2
        rr = r if i % 2 == 0 else r * 0.45
        pts.append(((cx + rr * math.cos(a)) * S, (cy + rr * math.sin(a)) * S))
    d.polygon(pts, fill=fill, outline=INK, width=3 * S)


def drop(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: Colour = WATER) -> None:
    d.polygon([k(cx, cy - 2.2 * r), k(cx - r * 0.95, cy - 0.3 * r), k(cx + r * 0.95, cy - 0.3 * r)], fill=fill)
    d.ellipse(k(cx - r, cy - r, cx + r, cy + r), fill=fill)


def kieuk(d: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float, fill: Colour, stroke: int) -> None:
    """ㅋ as strokes: the top bar turning down the right side and sweeping left at the foot, and the
    middle bar reaching across to it."""
    line(d, [(x, y), (x + w, y), (x + w, y + h * 0.62), (x + w * 0.9, y + h * 0.85), (x + w * 0.55, y + h)],
         fill, stroke)
    line(d, [(x, y + h * 0.45), (x + w, y + h * 0.45)], fill, stroke)


# -- the stickers ----------------------------------------------------------------------------------
def _laugh(d: ImageDraw.ImageDraw) -> None:
    face(d, 128, 132, 100, YELLOW)
    for cx in (88, 168):                                                       # squeezed-shut eyes ><
        line(d, [(cx - 18, 96), (cx + 4 if cx < 128 else cx - 4, 108), (cx - 18 if cx < 128 else cx + 18, 120)]
             if cx < 128 else [(cx + 18, 96), (cx - 4, 108), (cx + 18, 120)], INK, 7)
    d.chord(k(70, 120, 186, 220), 0, 180, fill=(120, 30, 40), outline=INK, width=5 * S)   # huge open mouth
    d.chord(k(100, 170, 156, 218), 180, 360, fill=(255, 110, 120))                      # tongue
    for cx, sgn in ((34, -1), (222, 1)):                                      # tears of joy flying off
        drop(d, cx, 110, 14)
        drop(d, cx + sgn * 6, 150, 10)


def _cry(d: ImageDraw.ImageDraw) -> None:
    face(d, 128, 120, 96, (170, 210, 250))
    for cx in (90, 166):
        d.arc(k(cx - 18, 88, cx + 18, 118), 200, 340, fill=INK, width=6 * S)       # shut eyes
        d.rectangle(k(cx - 12, 110, cx + 12, 250), fill=(60, 140, 230))       # two waterfalls of tears
        d.ellipse(k(cx - 26, 226, cx + 26, 254), fill=(60, 140, 230))
    pts = [(100 + i * 7, 170 + (8 if i % 2 else 0)) for i in range(9)]       # wobbly wailing mouth
    line(d, pts, INK, 6)


def _angry(d: ImageDraw.ImageDraw) -> None:
    face(d, 128, 140, 100, (240, 80, 60))
    line(d, [(64, 96), (112, 120)], INK, 10)                                   # brows slammed down
    line(d, [(192, 96), (144, 120)], INK, 10)
    for cx in (92, 164):
        d.ellipse(k(cx - 10, 124, cx + 10, 144), fill=INK)
    d.rectangle(k(92, 176, 164, 200), fill=WHITE, outline=INK, width=4 * S)   # gritted teeth
    for x in (110, 128, 146):
        line(d, [(x, 178), (x, 198)], INK, 3)
    for cx, sgn in ((26, -1), (230, 1)):                                      # steam out of the ears
        for i, r in enumerate((14, 18, 22)):
            x, y = cx + sgn * 4 * i, 150 - 30 * i
            d.ellipse(k(x - r, y - r, x + r, y + r), fill=(240, 240, 240), outline=INK, width=3 * S)
    for a in (45, 135):                                                       # the anger mark on the brow
        rad = math.radians(a)
        line(d, [(196 + 14 * math.cos(rad), 84 - 14 * math.sin(rad)),
                 (196 - 14 * math.cos(rad), 84 + 14 * math.sin(rad))], (140, 0, 0), 6)


def _love(d: ImageDraw.ImageDraw) -> None:
    heart(d, 128, 132, 118, PINK)
    for cx in (92, 164):
        heart(d, cx, 112, 24, RED, WHITE)                                     # heart eyes
    d.arc(k(100, 130, 156, 178), 20, 160, fill=INK, width=6 * S)
    for cx, cy, r in ((30, 30, 16), (224, 22, 12), (232, 72, 9)):             # little hearts floating up
        heart(d, cx, cy, r, RED, None)


def _thumbs_up(d: ImageDraw.ImageDraw) -> None:
    d.ellipse(k(8, 8, 248, 248), fill=BLUE)
    d.rounded_rectangle(k(70, 110, 180, 210), radius=24 * S, fill=SKIN, outline=INK, width=5 * S)   # fist
    d.rounded_rectangle(k(92, 30, 134, 130), radius=20 * S, fill=SKIN, outline=INK, width=5 * S)   # thumb
    d.rectangle(k(96, 110, 130, 126), fill=SKIN)
    for y in (136, 160, 184):
        line(d, [(146, y), (178, y)], INK, 4)                                 # folded fingers
    d.rounded_rectangle(k(48, 112, 76, 214), radius=8 * S, fill=NAVY)         # cuff
    for cx, cy in ((200, 50), (216, 92), (44, 70)):
        star(d, cx, cy, 14, YELLOW, 4)


def _ok(d: ImageDraw.ImageDraw) -> None:
    d.rounded_rectangle(k(12, 40, 244, 216), radius=48 * S, fill=GREEN, outline=INK, width=6 * S)
    text(d, 110, 128, "OK", 110, WHITE, INK, 6)
    line(d, [(190, 128), (206, 150), (236, 96)], WHITE, 12)                   # a tick


def _sorry(d: ImageDraw.ImageDraw) -> None:
    d.rectangle(k(0, 190, 256, 256), fill=(200, 190, 240))                    # the floor
    d.rounded_rectangle(k(40, 120, 200, 196), radius=34 * S, fill=PURPLE, outline=INK, width=5 * S)  # bent back
    face(d, 184, 168, 40, SKIN)                                               # head bowed low
    d.arc(k(164, 170, 184, 186), 20, 160, fill=INK, width=4 * S)
    d.arc(k(188, 172, 208, 188), 20, 160, fill=INK, width=4 * S)
    d.rounded_rectangle(k(56, 184, 84, 232), radius=10 * S, fill=PURPLE, outline=INK, width=5 * S)   # knees
    drop(d, 224, 130, 10)                                                     # sweat
    text(d, 128, 54, "SORRY", 56, WHITE, PURPLE, 6)


def _thanks(d: ImageDraw.ImageDraw) -> None:
    d.ellipse(k(10, 10, 246, 246), fill=(255, 235, 200))
    for a in range(0, 360, 60):                                               # a flower
        rad = math.radians(a)
        cx, cy = 128 + 34 * math.cos(rad), 98 + 34 * math.sin(rad)
        d.ellipse(k(cx - 26, cy - 26, cx + 26, cy + 26), fill=(255, 150, 190), outline=INK, width=4 * S)
    d.ellipse(k(104, 74, 152, 122), fill=YELLOW, outline=INK, width=4 * S)
    line(d, [(128, 150), (128, 176)], GREEN, 8)
    text(d, 128, 206, "THANKS", 50, (255, 110, 80), INK, 5)


def _surprised(d: ImageDraw.ImageDraw) -> None:
    d.polygon([k(128 + (120 if i % 2 == 0 else 88) * math.cos(math.pi * i / 10),
                 128 + (120 if i % 2 == 0 else 88) * math.sin(math.pi * i / 10)) for i in range(20)],
              fill=(255, 240, 90), outline=INK, width=4 * S)                  # a shock burst
    face(d, 128, 132, 70, (235, 240, 255))
    for cx in (104, 152):
        d.ellipse(k(cx - 16, 96, cx + 16, 132), fill=WHITE, outline=INK, width=4 * S)
        d.ellipse(k(cx - 6, 108, cx + 6, 120), fill=INK)
    d.ellipse(k(114, 150, 142, 188), fill=INK)                                # O mouth
    text(d, 30, 56, "!", 70, RED, INK, 4)
    text(d, 226, 56, "!", 70, RED, INK, 4)


def _sleepy(d: ImageDraw.ImageDraw) -> None:
    d.rounded_rectangle(k(8, 8, 248, 248), radius=40 * S, fill=NAVY)
    d.ellipse(k(40, 60, 200, 220), fill=(255, 230, 130))                      # crescent moon
    d.ellipse(k(88, 44, 236, 192), fill=NAVY)
    d.arc(k(64, 130, 92, 148), 20, 160, fill=INK, width=5 * S)                # asleep on the moon
    line(d, [(80, 170), (92, 176)], INK, 4)
    for cx, cy in ((40, 40), (60, 226), (226, 220)):
        star(d, cx, cy, 9, (255, 250, 200), 4)
    text(d, 188, 200, "z", 34, WHITE, NAVY, 0)
    text(d, 208, 160, "Z", 50, WHITE, NAVY, 0)
    text(d, 226, 104, "Z", 66, WHITE, NAVY, 0)


def _celebrate(d: ImageDraw.ImageDraw) -> None:
    d.ellipse(k(8, 8, 248, 248), fill=(255, 245, 190))
    d.polygon([k(22, 240), k(60, 104), k(158, 202)], fill=(255, 170, 60), outline=INK, width=6 * S)  # popper
    for i in range(3):
        line(d, [(38 + 14 * i, 196 - 34 * i), (104 + 16 * i, 228 - 14 * i)], RED, 8)
    colours = [RED, BLUE, GREEN, PURPLE, PINK, ORANGE]
    for i in range(4):                                                         # streamers
        pts = [(112 + 10 * i + 8 * j, 104 - 20 * j - 6 * i + (8 if j % 2 else -8)) for j in range(5)]
        line(d, pts, colours[i], 7)
    for i, (x, y) in enumerate(((150, 30), (206, 60), (186, 126), (230, 150), (96, 52), (236, 96), (208, 196),
                                (60, 40))):
        c = colours[i % len(colours)]
        if i % 2:
            d.rectangle(k(x - 13, y - 7, x + 13, y + 7), fill=c, outline=INK, width=3 * S)
        else:
            star(d, x, y, 15, c)


def _kk(d: ImageDraw.ImageDraw) -> None:
    d.rounded_rectangle(k(8, 40, 248, 196), radius=60 * S, fill=(255, 225, 60), outline=INK, width=6 * S)
    d.polygon([k(60, 186), k(48, 240), k(104, 192)], fill=(255, 225, 60), outline=INK, width=6 * S)   # tail
    d.rectangle(k(58, 180, 100, 192), fill=(255, 225, 60))
    for i in range(3):                                                        # ㅋㅋㅋ
        kieuk(d, 32 + 70 * i, 76, 48, 84, (90, 60, 20), 12)


def _fighting(d: ImageDraw.ImageDraw) -> None:
    d.polygon([k(128 + (124 if i % 2 == 0 else 96) * math.cos(math.pi * i / 8),
                 112 + (110 if i % 2 == 0 else 84) * math.sin(math.pi * i / 8)) for i in range(16)],
              fill=(255, 120, 40))                                            # a blast behind
    d.rounded_rectangle(k(98, 120, 158, 182), radius=8 * S, fill=(255, 80, 60), outline=INK, width=5 * S)  # sleeve
    d.rounded_rectangle(k(70, 46, 186, 136), radius=30 * S, fill=SKIN, outline=INK, width=5 * S)   # the fist
    for i in range(4):                                                         # four knuckles on top
        x = 74 + 28 * i
        d.ellipse(k(x, 34, x + 28, 70), fill=SKIN, outline=INK, width=4 * S)
    d.rectangle(k(78, 54, 180, 72), fill=SKIN)
    for x in (102, 130, 158):
        line(d, [(x, 56), (x, 84)], INK, 4)
    d.rounded_rectangle(k(76, 86, 160, 112), radius=13 * S, fill=SKIN, outline=INK, width=4 * S)   # thumb across
    text(d, 128, 218, "FIGHTING!", 40, WHITE, RED, 6)


def _hi(d: ImageDraw.ImageDraw) -> None:
    d.ellipse(k(20, 20, 236, 236), fill=(130, 220, 200))
    d.rounded_rectangle(k(92, 96, 178, 196), radius=26 * S, fill=SKIN, outline=INK, width=5 * S)   # palm
    for i, x in enumerate((94, 116, 138, 160)):                               # fingers
        top = 40 + (abs(1.5 - i) * 10)
        d.rounded_rectangle(k(x, top, x + 20, 120), radius=10 * S, fill=SKIN, outline=INK, width=4 * S)
    d.rectangle(k(97, 104, 174, 124), fill=SKIN)
    d.rounded_rectangle(k(60, 130, 104, 158), radius=12 * S, fill=SKIN, outline=INK, width=4 * S)  # thumb
    for r in (40, 56):                                                         # wave lines
        d.arc(k(190 - r, 80 - r, 190 + r, 80 + r), 300, 20, fill=INK, width=4 * S)
    text(d, 62, 64, "HI!", 46, WHITE, INK, 5)


def _coffee(d: ImageDraw.ImageDraw) -> None:
    d.rounded_rectangle(k(16, 16, 240, 240), radius=36 * S, fill=(200, 150, 110))
    d.ellipse(k(40, 194, 216, 230), fill=WHITE, outline=INK, width=4 * S)      # saucer
    d.rounded_rectangle(k(62, 110, 174, 214), radius=28 * S, fill=WHITE, outline=INK, width=5 * S)   # cup
    d.ellipse(k(64, 100, 172, 128), fill=BROWN, outline=INK, width=4 * S)
    d.arc(k(156, 130, 206, 184), 270, 90, fill=INK, width=8 * S)               # handle
    heart(d, 118, 164, 18, PINK, None)
    for x in (92, 118, 144):                                                   # steam
        line(d, [(x, 88), (x - 8, 70), (x + 4, 52), (x - 4, 34)], WHITE, 5)


# -- the mascot (animated) -------------------------------------------------------------------------
BODY = (242, 148, 84)
BODY_DARK = (196, 104, 52)


def _bridge(d: ImageDraw.ImageDraw, bounce: int) -> None:
    y0 = bounce
    d.ellipse(k(20, 200, 236, 236), fill=WATER)                                # river
    d.rounded_rectangle(k(24, 70 + y0, 232, 120 + y0), radius=22 * S, fill=BODY)
    d.rounded_rectangle(k(36, 100 + y0, 84, 214), radius=14 * S, fill=BODY)
    d.rounded_rectangle(k(172, 100 + y0, 220, 214), radius=14 * S, fill=BODY)
    d.pieslice(k(78, 116 + y0, 178, 236 + y0), 180, 360, fill=BODY)
    d.pieslice(k(96, 140 + y0, 160, 236 + y0), 180, 360, fill=WATER)
    d.rectangle(k(96, 188 + y0, 160, 214), fill=WATER)
    for x in range(40, 220, 30):
        d.rounded_rectangle(k(x, 56 + y0, x + 8, 76 + y0), radius=3 * S, fill=BODY_DARK)
    d.rounded_rectangle(k(32, 52 + y0, 224, 60 + y0), radius=4 * S, fill=BODY_DARK)
    for cx in (100, 156):
        d.arc(k(cx - 10, 82 + y0, cx + 10, 100 + y0), 200, 340, fill=INK, width=4 * S)
        d.ellipse(k(cx - 33, 95 + y0, cx - 15, 105 + y0) if cx < 128 else k(cx + 15, 95 + y0, cx + 33, 105 + y0),
                  fill=CHEEK)
    d.chord(k(110, 92 + y0, 146, 118 + y0), 0, 180, fill=INK)


# (name, emoji alt, drawing): the name is the sticker's file name and its description.
STICKERS: list[tuple[str, str, Draw]] = [
    ("laughing", "😂", _laugh), ("kkk", "🤣", _kk), ("crying", "😭", _cry), ("angry", "😡", _angry),
    ("love", "😍", _love), ("thumbs-up", "👍", _thumbs_up), ("ok", "👌", _ok), ("sorry", "🙇", _sorry),
    ("thanks", "🙏", _thanks), ("surprised", "😱", _surprised), ("sleepy", "😴", _sleepy),
    ("celebrate", "🎉", _celebrate), ("fighting", "💪", _fighting), ("hi", "👋", _hi), ("coffee", "☕", _coffee),
]
TITLES = {"laughing": "Laughing", "kkk": "ㅋㅋㅋ (LOL)", "crying": "Crying", "angry": "Angry", "love": "Love",
          "thumbs-up": "Thumbs up", "ok": "OK", "sorry": "Sorry (bowing)", "thanks": "Thanks",
          "surprised": "Surprised", "sleepy": "Sleepy", "celebrate": "Celebrate", "fighting": "Fighting!",
          "hi": "Hi!", "coffee": "Coffee break", "hop": "Dari hops"}


def render(drawing: Draw) -> Image.Image:
    img = Image.new("RGBA", (SIZE * S, SIZE * S), (0, 0, 0, 0))
    drawing(ImageDraw.Draw(img))
    return img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _hop() -> bytes:
    """An animated WebP: Dari the bridge hops (the pack's one animated sticker)."""
    def frame(bounce: int) -> Draw:
        return lambda d: _bridge(d, bounce)

    frames = [render(frame(round(6 * math.sin(i / 8 * 2 * math.pi)))) for i in range(8)]
    out = io.BytesIO()
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:], duration=90, loop=0, quality=85)
    return out.getvalue()


# Bump when the drawings change: caches of older renderings are then ignored, and a server whose
# database holds an older default pack replaces its stickers on start (stickers.import_default).
VERSION = 2


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
    out = {f"{name}.png": _png(render(fn)) for name, _, fn in STICKERS}
    out["hop.webp"] = _hop()
    manifest = {"slug": "dari-bridge", "title": "다리 Dari", "author": "the dari project", "version": VERSION,
                "stickers": [{"file": f"{name}.png", "emoji": emoji, "name": TITLES[name]}
                             for name, emoji, _ in STICKERS]
                + [{"file": "hop.webp", "emoji": "🌉", "name": TITLES["hop"]}]}
    out["manifest.json"] = json.dumps(manifest, ensure_ascii=False).encode()
    return out


def contact_sheet(px: int = 128) -> Image.Image:
    """Every sticker at `px` on one sheet with its name: for looking at the pack as a person would."""
    names = [n for n, _, _ in STICKERS]
    imgs = [render(fn) for _, _, fn in STICKERS]
    cols = 4
    rows = -(-len(imgs) // cols)
    sheet = Image.new("RGB", (cols * (px + 16), rows * (px + 36)), (250, 250, 250))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(12)
    for i, (name, img) in enumerate(zip(names, imgs, strict=True)):
        x, y = (i % cols) * (px + 16) + 8, (i // cols) * (px + 36) + 8
        sheet.paste(img.resize((px, px), Image.Resampling.LANCZOS), (x, y), img.resize((px, px)))
        d.text((x + px // 2, y + px + 12), name, fill=(0, 0, 0), font=font, anchor="mm")
    return sheet
