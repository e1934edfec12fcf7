"""A contact sheet of sample scenes with their captions, so a person can see the world."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cclip_jax.synthetic.grammar import knobs_for, make_caption
from cclip_jax.synthetic.splits import STREAM_CAPTION, sample_scene, stream_rng
from cclip_jax.synthetic.world import training_example

_PAD = 6
_LINE_HEIGHT = 14
_LINES_PER_CAPTION = 3


def _wrap(text: str, draw: ImageDraw.ImageDraw, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > _LINES_PER_CAPTION:
        lines = [*lines[: _LINES_PER_CAPTION - 1], lines[_LINES_PER_CAPTION - 1] + " ..."]
    return lines


def contact_sheet(
    seed: int = 0,
    presets: Sequence[str] = ("clean", "natural"),
    count: int = 16,
    image_size: int = 64,
    columns: int = 4,
    scale: int = 3,
) -> np.ndarray:
    """Training scenes `0 .. count-1`, upscaled `scale` times, with one caption per preset.

    The caption of the first preset is the one `write_world(preset=presets[0])` writes; the
    others are drawn from the same random stream with other knobs. Returns uint8 `[H, W, 3]`.
    """
    if count < 1 or columns < 1 or scale < 1 or not presets:
        raise ValueError(
            f"count/columns/scale/presets: expected >= 1, got {count}/{columns}/"
            f"{scale}/{len(presets)}"
        )
    for preset in presets:
        knobs_for(preset)  # fails early, naming the known presets
    tile = image_size * scale
    text_h = len(presets) * _LINES_PER_CAPTION * _LINE_HEIGHT
    cell_w, cell_h = tile + 2 * _PAD, tile + 3 * _PAD + text_h
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for k in range(count):
        image = training_example(seed, k, presets[0], image_size).image
        scene = sample_scene(seed, k, "train")
        x0, y0 = (k % columns) * cell_w + _PAD, (k // columns) * cell_h + _PAD
        # Nearest-neighbour upscaling shows the pixels the model actually sees.
        sheet.paste(Image.fromarray(image).resize((tile, tile), Image.NEAREST), (x0, y0))
        y = y0 + tile + 2
        for preset in presets:
            caption = make_caption(scene, preset, stream_rng(seed, STREAM_CAPTION, "train", k))
            label = f"{preset}: " if len(presets) > 1 else ""
            lines = _wrap(label + caption, draw, font, tile)
            for n, line in enumerate(lines):
                colour = (0, 0, 0) if preset == presets[0] else (90, 90, 90)
                draw.text((x0, y + n * _LINE_HEIGHT), line, fill=colour, font=font)
            y += len(lines) * _LINE_HEIGHT + 2
    return np.asarray(sheet)


def write_preview(path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Writes `contact_sheet(**kwargs)` as a PNG to `path`."""
    Image.fromarray(contact_sheet(**kwargs)).save(path, optimize=True)
