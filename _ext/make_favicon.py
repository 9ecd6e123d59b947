"""Draw the book's favicon, _static/favicon.png: a digit coming out of noise, as in a diffusion model.

A 16 x 16 grid of grey pixels, 4 screen pixels each (64 x 64 PNG): a ring, the digit 0, that is pure
noise in the left column and clean from the eleventh column on, the way a sampler turns noise into an image
from one step to the next. The noise is a fixed hash of each cell's position, so the picture is the
same on every machine; tests/test_project.py checks that the committed file is what this draws.

    python _ext/make_favicon.py            # writes _static/favicon.png next to _config.yml
"""

import sys
from pathlib import Path

from PIL import Image

GRID, SCALE = 16, 4
BACKGROUND = (24, 33, 56)  # dark blue
INK = (255, 255, 255)
ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "_static" / "favicon.png"


def _noise(x: int, y: int) -> float:
    """A number in [0, 1) fixed by the cell's position (integer hash, no random state)."""
    h = (x * 374761393 + y * 668265263) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) & 0xFFFF) / 65536


def _digit(x: int, y: int) -> float:
    """1 on an upright ring (the digit 0), 0 elsewhere."""
    dx, dy = (x - 7.5) / 5.0, (y - 7.5) / 6.5
    radius = (dx * dx + dy * dy) ** 0.5
    return 1.0 if 0.62 <= radius <= 1.0 else 0.0


def draw() -> Image.Image:
    image = Image.new("RGB", (GRID * SCALE, GRID * SCALE), BACKGROUND)
    for y in range(GRID):
        for x in range(GRID):
            clean = min(1.0, x / 10)  # 0: all noise in the left column, 1: the clean digit from column 10 on
            value = clean * _digit(x, y) + (1 - clean) * _noise(x, y)
            colour = tuple(round(b + value * (i - b)) for b, i in zip(BACKGROUND, INK))
            image.paste(colour, (x * SCALE, y * SCALE, (x + 1) * SCALE, (y + 1) * SCALE))
    return image


def main(argv: list[str]) -> None:
    target = Path(argv[1]) if len(argv) > 1 else TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    draw().save(target, optimize=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv)
