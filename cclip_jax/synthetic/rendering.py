"""Rendering scenes to pixels, vectorised with numpy.

Each (shape, diameter in pixels) gets an anti-aliased coverage mask once (drawn by Pillow at 4x
resolution and box-filtered down) and cached; drawing an object is then one alpha blend of a
small window. Objects are flat colours; only the background carries noise, so every interior
pixel of an object has exactly the object's `rgb` (tests rely on it).
"""

from __future__ import annotations

import functools
import io
import math
import random
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

from cclip_jax.synthetic.scene import SHAPES, SIZES, Scene

BACKGROUND = 128  # grey level of the background, all channels
NOISE_AMPLITUDE = 8  # background noise: ints in [-8, 8] per block and channel
NOISE_CELLS = 16  # the noise grid is 16 x 16 blocks whatever the image size
NOISE_VARIANTS = 256  # distinct backgrounds; a scene's `noise_seed` picks one
_SUPERSAMPLE = 4


def _polygon(points: list[tuple[float, float]], c: float, scale: float) -> list[tuple[float, ...]]:
    return [(c + px * scale, c + py * scale) for px, py in points]


def _regular(n: int, start_deg: float, radius: float = 1.0) -> list[tuple[float, float]]:
    step = 2 * math.pi / n
    return [
        (
            radius * math.cos(math.radians(start_deg) + k * step),
            radius * math.sin(math.radians(start_deg) + k * step),
        )
        for k in range(n)
    ]


def _star() -> list[tuple[float, float]]:
    outer = _regular(5, -90.0, 1.0)
    inner = _regular(5, -90.0 + 36.0, 0.45)
    return [p for pair in zip(outer, inner, strict=True) for p in pair]


# Outlines in the unit disc (y down). The triangle is shifted down so that its bounding box is
# centred on the object's centre, which therefore lies inside every shape.
_OUTLINES: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -0.87), (0.95, 0.78), (-0.95, 0.78)],
    "diamond": [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)],
    "cross": [
        (-0.3, -0.9),
        (0.3, -0.9),
        (0.3, -0.3),
        (0.9, -0.3),
        (0.9, 0.3),
        (0.3, 0.3),
        (0.3, 0.9),
        (-0.3, 0.9),
        (-0.3, 0.3),
        (-0.9, 0.3),
        (-0.9, -0.3),
        (-0.3, -0.3),
    ],
    "star": _star(),
}


@functools.lru_cache(maxsize=256)
def shape_mask(shape: str, diameter: int) -> np.ndarray:
    """Coverage of `shape` in a `[diameter, diameter, 1]` float32 window, values in [0, 1]."""
    if shape not in SHAPES:
        raise ValueError(f"shape: unknown value {shape!r}; known: {', '.join(SHAPES)}")
    big = diameter * _SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    c, scale = big / 2, big / 2
    if shape == "circle":
        draw.ellipse([0, 0, big - 1, big - 1], fill=255)
    else:
        draw.polygon(_polygon(_OUTLINES[shape], c, scale), fill=255)
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a.reshape(diameter, _SUPERSAMPLE, diameter, _SUPERSAMPLE).mean(axis=(1, 3))[..., None]
    a.setflags(write=False)
    return a


def diameter_px(size: str, image_size: int) -> int:
    return max(3, round(SIZES[size] * image_size))


def object_window(x: float, y: float, diameter: int, image_size: int) -> tuple[int, int]:
    """Top-left pixel `(row, col)` of an object's mask window."""
    return round(y * image_size - diameter / 2), round(x * image_size - diameter / 2)


@functools.lru_cache(maxsize=4)
def _background_bank(size: int) -> np.ndarray:
    """`NOISE_VARIANTS` noisy backgrounds, uint8 `[NOISE_VARIANTS, size, size, 3]`, read-only.

    The noise lives on a coarse `NOISE_CELLS x NOISE_CELLS` grid of blocks, not per pixel:
    per-pixel noise is incompressible and made PNG encoding cost more than everything else
    together. Upsampling the grid is a slow strided copy, so it is done once per variant here.
    """
    cell = -(-size // NOISE_CELLS)
    span = 2 * NOISE_AMPLITUDE + 1
    bank = np.empty((NOISE_VARIANTS, size, size, 3), np.uint8)
    for v in range(NOISE_VARIANTS):
        raw = random.Random(v).randbytes(NOISE_CELLS * NOISE_CELLS * 3)
        grid = np.frombuffer(raw, np.uint8).reshape(NOISE_CELLS, NOISE_CELLS, 3)
        grid = grid % span + (BACKGROUND - NOISE_AMPLITUDE)
        bank[v] = grid.repeat(cell, axis=0).repeat(cell, axis=1)[:size, :size]
    bank.setflags(write=False)
    return bank


def background(scene: Scene, size: int) -> np.ndarray:
    """The scene's noisy grey background, a fresh uint8 `[size, size, 3]` array."""
    return _background_bank(size)[scene.noise_seed % NOISE_VARIANTS].copy()


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """Renders `scene` as a uint8 `[size, size, 3]` RGB image (deterministic)."""
    if size < 8:
        raise ValueError(f"size: expected an image size >= 8 pixels, got {size}")
    canvas = background(scene, size)
    for obj in scene.objects:
        d = diameter_px(obj.size, size)
        mask = shape_mask(obj.shape, d)
        r0, c0 = object_window(obj.x, obj.y, d, size)
        # Clip the window to the canvas (only matters for hand-made scenes near the border).
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + d, size), min(c0 + d, size)
        if rr0 >= rr1 or cc0 >= cc1:
            continue
        a = mask[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]
        win = canvas[rr0:rr1, cc0:cc1].astype(np.float32)
        # Alpha blend; fully covered pixels get exactly `rgb` (a == 1 there).
        win += a * (np.asarray(obj.rgb, dtype=np.float32) - win)
        canvas[rr0:rr1, cc0:cc1] = np.rint(win)
    return canvas


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 `[H, W, 3]` image.

    A minimal encoder (filter "none", zlib level 1): Pillow's encoder tries filters per row and
    cost 3x more here; encoding is the largest share of generation time.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    h, w, _ = image.shape
    rows = np.zeros((h, 1 + 3 * w), np.uint8)  # leading 0 per row: PNG filter type "none"
    rows[:, 1:] = image.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)),
            _chunk(b"IEND", b""),
        )
    )


def decode_png(data: bytes) -> np.ndarray:
    """uint8 `[H, W, 3]` pixels of PNG bytes."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
