"""Named tower sizes (big_vision's ViT variants) and their decoding.

A variant is a size name, optionally with a patch size for the image tower: `"B"`, `"B/16"`,
`"So400m/14"`. Widths, depths, MLP widths and head counts follow big_vision's `decode_variant`
(Table 2 of https://arxiv.org/abs/2106.04560, plus `mu`, a micro size for tests and CPU demos),
so a `B/16` here has exactly the tree and shapes of a big_vision/SigLIP `B/16`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TowerSize:
    """Transformer dimensions of one tower. `patch_size` is None for a bare size name."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int | None = None


# name: (width, depth, mlp_dim, num_heads)
SIZES: dict[str, tuple[int, int, int, int]] = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
}


def decode_variant(variant: str) -> TowerSize:
    """Turns `"B"` or `"B/16"` into a `TowerSize`.

    Raises:
      ValueError: for an unknown size name (the message lists the known ones) or a bad patch.
    """
    name, _, patch = variant.partition("/")
    if name not in SIZES:
        raise ValueError(
            f"Unknown model size {name!r} in variant {variant!r}; known sizes: {', '.join(SIZES)}"
        )
    patch_size = None
    if patch:
        if not patch.isdigit() or int(patch) <= 0:
            raise ValueError(f"Bad patch size in variant {variant!r}: expected e.g. 'B/16'")
        patch_size = int(patch)
    return TowerSize(*SIZES[name], patch_size=patch_size)
