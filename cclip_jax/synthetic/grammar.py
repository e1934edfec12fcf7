"""The caption grammar and its knobs.

    caption := clause ("and" clause)*
    clause  := np | np relation np
    np      := ("a" | "an") [size] [colour] shape   ("an" before a vowel)
    relation:= "left of" | "right of" | "above" | "below"

Captions are lower case, without punctuation, e.g. `a small red circle left of a large blue
square and a star`. Every caption this module makes is true of its scene (the oracle checks it).

Knobs (`CaptionKnobs`), the properties known to decide whether contrastive training learns
binding: completeness (`p_mention`), attribute density (`p_attribute`), describing only the most
salient object (`p_salient_only`), mention order (`shuffle`), relations between consecutive
mentions (`p_relation`) and paraphrase (`p_paraphrase`: "B right of A" for "A left of B").
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from cclip_jax.synthetic.scene import (
    CONVERSE,
    RELATIONS,
    SIZES,
    Scene,
    SceneObject,
    choose,
    relation_holds,
)


@dataclasses.dataclass(frozen=True)
class CaptionKnobs:
    """Caption-sampling probabilities; see the module docstring."""

    p_mention: float = 1.0  # each non-salient object is mentioned with this probability
    p_attribute: float = 1.0  # size and colour are each named with this probability
    p_salient_only: float = 0.0  # describe only the most salient object
    shuffle: bool = True  # random mention order (else: most salient first, then left to right)
    p_relation: float = 1.0  # join two consecutive mentions by a relation
    p_paraphrase: float = 0.5  # state the relation from the other object's side

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "shuffle" and not 0.0 <= v <= 1.0:
                raise ValueError(f"CaptionKnobs.{f.name}: expected a probability, got {v!r}")


PRESETS: dict[str, CaptionKnobs] = {
    # Complete and dense: every object, every attribute, relations between all neighbours.
    "clean": CaptionKnobs(),
    # Like alt-text: incomplete, sparse, biased to the most salient object.
    "natural": CaptionKnobs(
        p_mention=0.6, p_attribute=0.5, p_salient_only=0.4, p_relation=0.7, p_paraphrase=0.5
    ),
}


def knobs_for(preset_or_knobs: str | CaptionKnobs | Mapping[str, Any]) -> CaptionKnobs:
    """Resolves a preset name, a `CaptionKnobs`, or a dict of knob overrides."""
    if isinstance(preset_or_knobs, CaptionKnobs):
        return preset_or_knobs
    if isinstance(preset_or_knobs, str):
        if preset_or_knobs not in PRESETS:
            raise ValueError(
                f"preset: unknown value {preset_or_knobs!r}; known: {', '.join(PRESETS)}"
            )
        return PRESETS[preset_or_knobs]
    if isinstance(preset_or_knobs, Mapping):
        known = {f.name for f in dataclasses.fields(CaptionKnobs)}
        bad = sorted(set(preset_or_knobs) - known)
        if bad:
            raise ValueError(f"caption knobs: unknown field(s) {bad}; known: {sorted(known)}")
        return CaptionKnobs(**preset_or_knobs)
    raise TypeError(
        f"preset: expected a preset name, CaptionKnobs or dict, got {preset_or_knobs!r}"
    )


def noun_phrase(obj: SceneObject, size: bool = True, colour: bool = True) -> str:
    """`a [size] [colour] shape` ("an" before a vowel, as in "an orange star")."""
    words = []
    if size:
        words.append(obj.size)
    if colour:
        words.append(obj.colour)
    words.append(obj.shape)
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def relation_clause(subject: str, rel: str, obj: str) -> str:
    return f"{subject} {rel} {obj}"


def salience_order(scene: Scene) -> list[int]:
    """Object indices, most salient first: larger, then closer to the image centre."""

    def key(i: int) -> tuple[float, float]:
        o = scene.objects[i]
        return (-SIZES[o.size], (o.x - 0.5) ** 2 + (o.y - 0.5) ** 2)

    return sorted(range(len(scene.objects)), key=key)


def holding_relations(a: SceneObject, b: SceneObject) -> list[str]:
    return [r for r in RELATIONS if relation_holds(a, r, b)]


def as_rng(rng_or_seed: random.Random | np.random.Generator | int) -> random.Random:
    """A `random.Random` from a seed, a `random.Random` (used as is) or a numpy Generator."""
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if isinstance(rng_or_seed, np.random.Generator):
        return random.Random(int(rng_or_seed.integers(2**63)))
    if isinstance(rng_or_seed, int | np.integer):
        return random.Random(int(rng_or_seed))
    raise TypeError(f"rng_or_seed: expected an int seed or a generator, got {rng_or_seed!r}")


def shuffled(items: list[int], rng: random.Random) -> list[int]:
    """Fisher-Yates with `random()` only (its stream is stable across Python versions)."""
    out = list(items)
    for k in range(len(out) - 1, 0, -1):
        m = int(rng.random() * (k + 1))
        out[k], out[m] = out[m], out[k]
    return out


def make_caption(
    scene: Scene,
    preset_or_knobs: str | CaptionKnobs | Mapping[str, Any] = "clean",
    rng_or_seed: random.Random | np.random.Generator | int = 0,
) -> str:
    """A caption of `scene` sampled from the grammar with the given preset or knobs."""
    knobs = knobs_for(preset_or_knobs)
    rng = as_rng(rng_or_seed)
    order = salience_order(scene)
    if rng.random() < knobs.p_salient_only:
        mentioned = order[:1]
    else:
        # The most salient object is always mentioned: that is the saliency bias.
        mentioned = order[:1] + [i for i in order[1:] if rng.random() < knobs.p_mention]
        if knobs.shuffle:
            mentioned = shuffled(mentioned, rng)
        else:
            mentioned = mentioned[:1] + sorted(mentioned[1:], key=lambda i: scene.objects[i].x)

    def np_of(i: int) -> str:
        return noun_phrase(
            scene.objects[i],
            size=rng.random() < knobs.p_attribute,
            colour=rng.random() < knobs.p_attribute,
        )

    clauses = []
    k = 0
    while k < len(mentioned):
        i = mentioned[k]
        # In a valid scene any two objects are clearly apart on some axis, so `rels` is only
        # empty for hand-made scenes; those get two plain noun phrases instead.
        j = mentioned[k + 1] if k + 1 < len(mentioned) else None
        rels = [] if j is None else holding_relations(scene.objects[i], scene.objects[j])
        if rels and rng.random() < knobs.p_relation:
            rel = choose(rng, rels)
            a, b = np_of(i), np_of(j)  # type: ignore[arg-type]
            if rng.random() < knobs.p_paraphrase:
                clauses.append(relation_clause(b, CONVERSE[rel], a))
            else:
                clauses.append(relation_clause(a, rel, b))
            k += 2
        else:
            clauses.append(np_of(i))
            k += 1
    return " and ".join(clauses)
