"""Draw the web app's PNG icons (src/dari/web/icons/) from the design of src/dari/web/icon.svg:
a yellow rounded square with a dark bridge (an arch on a deck). Run once after changing the design:
    python docs/tools/make_icons.py
"maskable" icons fill the whole square (the platform cuts its own shape) and keep the bridge
inside the central safe zone."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[2] / "src" / "dari" / "web" / "icons"
YELLOW, INK = (0xFE, 0xE5, 0x00, 255), (0x19, 0x16, 0x00, 255)
SS = 4  # supersampling: draw large, shrink smoothly


def draw(size: int, maskable: bool) -> Image.Image:
    big = size * SS
    u = big / 64                                 # icon.svg's 64-unit grid
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if maskable:
        d.rectangle((0, 0, big, big), fill=YELLOW)
        scale, off = 0.72, big * 0.14            # the bridge inside the 80 % safe circle
    else:
        d.rounded_rectangle((0, 0, big - 1, big - 1), radius=18 * u, fill=YELLOW)
        scale, off = 1.0, 0.0

    def p(x: float, y: float) -> tuple[float, float]:
        return off + x * u * scale, off + y * u * scale

    w = 5 * u * scale
    r = w / 2

    def cap(x: float, y: float) -> None:
        cx, cy = p(x, y)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=INK)

    # The arch: the upper half of an ellipse centred at (32, 36), radii 18 x 14, on two short legs.
    (x0, y0), (x1, y1) = p(14, 22), p(50, 50)
    d.arc((x0 - r, y0 - r, x1 + r, y1 + r), 180, 360, fill=INK, width=round(w))
    for x in (14, 50):
        d.line((p(x, 36), p(x, 40)), fill=INK, width=round(w))
        cap(x, 40)
    # The deck.
    d.line((p(10, 42), p(54, 42)), fill=INK, width=round(w))
    cap(10, 42)
    cap(54, 42)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        draw(size, False).save(OUT / f"icon-{size}.png", optimize=True)
    draw(512, True).save(OUT / "icon-maskable-512.png", optimize=True)


if __name__ == "__main__":
    main()
