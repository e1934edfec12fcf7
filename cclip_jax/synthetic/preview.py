"""A contact sheet of sample scenes with their captions, so a person can see the world."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cclip_jax.synthetic.world import training_example

_PAD = 6
_TEXT_LINES = 4
_LINE_HEIGHT = 15


def _wrap(text: str, draw: ImageDraw.ImageDraw, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > _TEXT_LINES:
        lines = [*lines[: _TEXT_LINES - 1], lines[_TEXT_LINES - 1] + " ..."]
    return lines


def contact_sheet(
    seed: int = 0,
    preset: Any = "natural",
    count: int = 16,
    image_size: int = 64,
    columns: int = 4,
    scale: int = 3,
) -> np.ndarray:
    """Training examples `0 .. count-1` upscaled `scale` times with captions below them.

    Returns a uint8 `[H, W, 3]` image.
    """
    if count < 1 or columns < 1 or scale < 1:
        raise ValueError(f"count/columns/scale: expected >= 1, got {count}/{columns}/{scale}")
    tile = image_size * scale
    cell_w, cell_h = tile + 2 * _PAD, tile + 2 * _PAD + _TEXT_LINES * _LINE_HEIGHT
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for k in range(count):
        ex = training_example(seed, k, preset, image_size)
        x0, y0 = (k % columns) * cell_w + _PAD, (k // columns) * cell_h + _PAD
        # Nearest-neighbour upscaling shows the pixels the model actually sees.
        sheet.paste(Image.fromarray(ex.image).resize((tile, tile), Image.NEAREST), (x0, y0))
        for n, line in enumerate(_wrap(ex.caption, draw, font, tile)):
            draw.text((x0, y0 + tile + 2 + n * _LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    return np.asarray(sheet)


def write_preview(path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Writes `contact_sheet(**kwargs)` as a PNG to `path`."""
    Image.fromarray(contact_sheet(**kwargs)).save(path, optimize=True)
