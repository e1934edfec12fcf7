"""Evaluation item sets: which caption matches the image?

Pair items (one image, a `positive` and a `negative` caption), one kind per file:

| kind                | negative changes                              | bag of words solves it? |
|---------------------|-----------------------------------------------|-------------------------|
| `attribute_swap`    | colours of the two objects exchanged          | no (same words)         |
| `size_swap`         | sizes of the two objects exchanged            | no (same words)         |
| `relation_flip`     | subject and object exchanged                  | no (same words)         |
| `relation_replace`  | the relation replaced by one that is false    | partly                  |
| `object_replace`    | a shape replaced by one absent from the image | yes (control)           |
| `attribute_replace` | a colour replaced by one absent from the image| yes (control)           |

Group items (Winoground-style, two images x two captions, caption `i` matches image `i`): the
second image is the first with the swap done in pixel space (same background, same objects):
`group_attribute` (colours exchanged), `group_size` (sizes exchanged), `group_relation`
(positions exchanged). The captions of a group use exactly the same words.

Every positive holds and every negative does not, as checked by the oracle. Both captions of
an item state equally many held-out bindings (`_novelty`), so a text-only prior cannot tell
them apart by how familiar they sound. Item `n` of a kind
and split is a pure function of `(seed, split, kind, n)`.
"""

from __future__ import annotations

import dataclasses
import random

from cclip_jax.synthetic.grammar import noun_phrase
from cclip_jax.synthetic.oracle import holds
from cclip_jax.synthetic.scene import (
    COLOUR_NAMES,
    COLOURS,
    RELATIONS,
    SHAPES,
    Scene,
    SceneObject,
    choose,
    is_valid,
    with_objects,
)
from cclip_jax.synthetic.splits import (
    HELD_OUT_PAIRS,
    HELD_OUT_TRIPLES,
    STREAM_ITEM,
    check_split,
    sample_from_split,
    stream_rng,
)

SWAP_KINDS: tuple[str, ...] = ("attribute_swap", "size_swap", "relation_flip")
CONTROL_KINDS: tuple[str, ...] = ("object_replace", "attribute_replace")
PAIR_KINDS: tuple[str, ...] = (*SWAP_KINDS, "relation_replace", *CONTROL_KINDS)
GROUP_KINDS: tuple[str, ...] = ("group_attribute", "group_size", "group_relation")
KINDS: tuple[str, ...] = PAIR_KINDS + GROUP_KINDS

_MAX_ATTEMPTS = 1000


@dataclasses.dataclass(frozen=True)
class PairItem:
    """One image (`scene`), a caption that holds and one that does not."""

    kind: str
    scene: Scene
    positive: str
    negative: str


@dataclasses.dataclass(frozen=True)
class GroupItem:
    """Two images and two captions; `captions[i]` holds for `scenes[i]` only."""

    kind: str
    scenes: tuple[Scene, Scene]
    captions: tuple[str, str]


Item = PairItem | GroupItem

# A "fact" is (subject, relation, object) with the two objects of the item.
Fact = tuple[SceneObject, str, SceneObject]


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown value {kind!r}; known: {', '.join(KINDS)}")


def describe(fact: Fact) -> str:
    """The dense caption `a <size> <colour> <shape> <relation> a <size> <colour> <shape>`."""
    a, rel, b = fact
    return f"{noun_phrase(a)} {rel} {noun_phrase(b)}"


def _swap(a: SceneObject, b: SceneObject, *fields: str) -> tuple[SceneObject, SceneObject]:
    """`a` and `b` with the given fields exchanged."""
    return (
        dataclasses.replace(a, **{f: getattr(b, f) for f in fields}),
        dataclasses.replace(b, **{f: getattr(a, f) for f in fields}),
    )


def _pick_fact(scene: Scene, rng: random.Random) -> tuple[int, str, int]:
    """A labelled relation of the scene, preferring ones that bind a held-out pair or triple
    (only compositional scenes have those), so that those items test the held-out binding."""
    objs = scene.objects
    facts = scene.relations()

    def novel(f: tuple[int, str, int]) -> bool:
        i, rel, j = f
        pairs = {(objs[k].colour, objs[k].shape) for k in (i, j)}
        return (
            bool(pairs & HELD_OUT_PAIRS) or (objs[i].shape, rel, objs[j].shape) in HELD_OUT_TRIPLES
        )

    return choose(rng, [f for f in facts if novel(f)] or facts)


def _novelty(a: SceneObject, rel: str, b: SceneObject) -> int:
    """How many held-out bindings the caption `a rel b` states (colour-shape pairs, triple).

    Training captions of multi-object scenes never state them, so a text-only prior learns
    they are rare. An item whose two captions differ in novelty can be solved without looking
    at the image (a blind bigram model did: 72% on iid attribute swaps, whose negatives often
    created a held-out pair). Items therefore keep the novelty of both captions equal.
    """
    pairs = sum((o.colour, o.shape) in HELD_OUT_PAIRS for o in (a, b))
    return pairs + ((a.shape, rel, b.shape) in HELD_OUT_TRIPLES)


def _caption_novelty(caption: str) -> int:
    """`_novelty` of a dense caption `a <size> <colour> <shape> <rel> a <size> <colour> <shape>`."""
    w = caption.split()
    sa, sb = w[3], w[-1]
    rel = " ".join(w[4:-4])
    pairs = sum((c, sh) in HELD_OUT_PAIRS for c, sh in ((w[2], sa), (w[-2], sb)))
    return pairs + ((sa, rel, sb) in HELD_OUT_TRIPLES)


def _pair_negative(kind: str, fact: Fact, scene: Scene, rng: random.Random) -> str | None:
    """The negative caption of a pair item, or None when this fact cannot make one."""
    a, rel, b = fact
    if kind == "attribute_swap":
        return None if a.colour == b.colour else _swapped_caption(a, rel, b, "colour")
    if kind == "size_swap":
        return None if a.size == b.size else _swapped_caption(a, rel, b, "size")
    if kind == "relation_flip":
        return describe((b, rel, a))
    if kind == "relation_replace":
        return describe((a, choose(rng, [r for r in RELATIONS if r != rel]), b))
    present_shapes = {o.shape for o in scene.objects}
    present_colours = {o.colour for o in scene.objects}
    target = choose(rng, (0, 1))
    if kind == "object_replace":
        shape = choose(rng, [s for s in SHAPES if s not in present_shapes])
        new = dataclasses.replace(fact[2 * target], shape=shape)
    else:  # attribute_replace
        colour = choose(rng, [c for c in COLOUR_NAMES if c not in present_colours])
        new = dataclasses.replace(fact[2 * target], colour=colour, rgb=COLOURS[colour])
    return describe((new, rel, b) if target == 0 else (a, rel, new))


def _swapped_caption(a: SceneObject, rel: str, b: SceneObject, field: str) -> str:
    a2, b2 = _swap(a, b, field)
    return describe((a2, rel, b2))


# For each group kind: the fields exchanged between the two objects, in the scene for the second
# image and, for the attribute kinds, in the caption too.
_GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "group_attribute": ("colour", "rgb"),
    "group_size": ("size",),
    "group_relation": ("x", "y"),
}


def _group(kind: str, scene: Scene, ij: tuple[int, int], rel: str) -> GroupItem | None:
    i, j = ij
    a, b = scene.objects[i], scene.objects[j]
    fields = _GROUP_FIELDS[kind]
    if getattr(a, fields[0]) == getattr(b, fields[0]):
        return None
    objs = list(scene.objects)
    objs[i], objs[j] = _swap(a, b, *fields)
    other = with_objects(scene, objs)
    if not is_valid(other):
        return None  # e.g. a large object moved too close to the border
    c0 = describe((a, rel, b))
    # In the second image the relation holds between the objects as they now look.
    c1 = (
        describe((b, rel, a))
        if kind == "group_relation"
        else _swapped_caption(a, rel, b, fields[0])
    )
    return GroupItem(kind, (scene, other), (c0, c1))


def make_item(seed: int, split: str, kind: str, n: int) -> Item:
    """Item `n` of `kind` on scenes of `split`; deterministic in its arguments."""
    check_split(split)
    check_kind(kind)
    if split == "train":
        raise ValueError("split: evaluation items come from iid, compositional or productivity")
    rng = stream_rng(seed, STREAM_ITEM, split, KINDS.index(kind), n)
    num_objects = 3 if split == "productivity" else 2
    for _ in range(_MAX_ATTEMPTS):
        scene = sample_from_split(rng, split, num_objects)
        i, rel, j = _pick_fact(scene, rng)
        a, b = scene.objects[i], scene.objects[j]
        if kind in GROUP_KINDS:
            item = _group(kind, scene, (i, j), rel)
            if item is not None and _group_ok(item):
                return item
            continue
        negative = _pair_negative(kind, (a, rel, b), scene, rng)
        positive = describe((a, rel, b))
        if (
            negative is not None
            and holds(scene, positive)
            and holds(scene, negative) is False
            and _caption_novelty(negative) == _novelty(a, rel, b)
        ):
            return PairItem(kind, scene, positive, negative)
    raise RuntimeError(f"could not make a {kind} item for split {split} in {_MAX_ATTEMPTS} tries")


def _group_ok(item: GroupItem) -> bool:
    (s0, s1), (c0, c1) = item.scenes, item.captions
    return (
        bool(holds(s0, c0) and holds(s1, c1))
        and holds(s0, c1) is False
        and holds(s1, c0) is False
        and _caption_novelty(c0) == _caption_novelty(c1)
    )


def make_items(seed: int, split: str, kind: str, count: int) -> list[Item]:
    """Items `0 .. count-1` of `kind` on `split`."""
    return [make_item(seed, split, kind, n) for n in range(count)]
