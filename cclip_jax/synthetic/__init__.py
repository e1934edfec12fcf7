"""The synthetic compositional world: scenes with a known scene graph, captions, ground truth.

Public API (see docs/synthetic.md):

- `Scene`, `SceneObject`: scene graphs; `Scene.to_json()` / `Scene.from_json(d)`.
- `sample_scene(seed, index, split="train") -> Scene`: deterministic from its arguments.
- `render(scene, size=64) -> uint8 [size, size, 3]`; `encode_png`, `decode_png`.
- `make_caption(scene, preset_or_knobs, rng_or_seed) -> str`; `PRESETS`, `CaptionKnobs`.
- `holds(scene, phrase) -> bool | None`: the oracle, incl. masked captions with `<M>`.
- `make_item(seed, split, kind, n)`: evaluation items; `KINDS`, `SWAP_KINDS`, `GROUP_KINDS`.
- `write_world(out_dir, num_train, preset, seed, ...)`, `training_example(seed, index, ...)`.
- `contact_sheet(...)`: a preview image of sample scenes with their captions.
"""

from cclip_jax.synthetic.grammar import PRESETS, CaptionKnobs, make_caption
from cclip_jax.synthetic.items import (
    CONTROL_KINDS,
    GROUP_KINDS,
    KINDS,
    PAIR_KINDS,
    SWAP_KINDS,
    GroupItem,
    PairItem,
    make_item,
    make_items,
)
from cclip_jax.synthetic.oracle import holds, in_grammar
from cclip_jax.synthetic.preview import contact_sheet, write_preview
from cclip_jax.synthetic.rendering import decode_png, encode_png, render
from cclip_jax.synthetic.scene import (
    COLOUR_NAMES,
    COLOURS,
    RELATIONS,
    SHAPES,
    SIZE_NAMES,
    SIZES,
    Scene,
    SceneObject,
)
from cclip_jax.synthetic.splits import (
    EVAL_SPLITS,
    HELD_OUT_PAIRS,
    HELD_OUT_TRIPLES,
    SPLITS,
    sample_scene,
)
from cclip_jax.synthetic.world import Example, load_items, training_example, write_world

__all__ = [
    "COLOURS",
    "COLOUR_NAMES",
    "CONTROL_KINDS",
    "EVAL_SPLITS",
    "GROUP_KINDS",
    "HELD_OUT_PAIRS",
    "HELD_OUT_TRIPLES",
    "KINDS",
    "PAIR_KINDS",
    "PRESETS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SIZE_NAMES",
    "SPLITS",
    "SWAP_KINDS",
    "CaptionKnobs",
    "Example",
    "GroupItem",
    "PairItem",
    "Scene",
    "SceneObject",
    "contact_sheet",
    "decode_png",
    "encode_png",
    "holds",
    "in_grammar",
    "load_items",
    "make_caption",
    "make_item",
    "make_items",
    "render",
    "sample_scene",
    "training_example",
    "write_preview",
    "write_world",
]
