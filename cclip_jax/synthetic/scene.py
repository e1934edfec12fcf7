"""Scene graphs of the synthetic world: vocabulary, objects, geometry, JSON round trip, sampling.

Coordinates are normalised to the unit square: `x` grows to the right, `y` grows downwards (image
rows), so "above" means a smaller `y`. An object is a shape inscribed in a circle of radius
`SIZES[size] / 2` centred on `(x, y)`.

Relations are only ever *labelled* with a clear margin: along each axis two objects are either
clearly apart (centres at least `MARGIN` apart, the relation holds) or aligned (at most `ALIGNED`
apart, neither relation holds). The sampler rejects anything in between, so no relation in a
sampled scene is borderline, and any two objects are clearly apart on at least one axis (they
cannot overlap otherwise).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")

# Eight colours far apart in RGB (and from the grey background) so that small jitter never makes
# one look like another.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (235, 215, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "purple": (140, 60, 190),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Diameter as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.2, "large": 0.32}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
CONVERSE: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}

MARGIN = 0.15  # centres at least this far apart along an axis: the relation holds
ALIGNED = 0.04  # centres at most this far apart: aligned, neither relation holds
GAP = 0.03  # extra clearance between the bounding circles of two objects
BORDER = 0.02  # clearance between an object and the image border
COLOUR_JITTER = 12  # max per-channel deviation from the named colour
MAX_OBJECTS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class SceneObject:
    """One object: `shape`, `colour`, `size` names, centre `(x, y)` in [0, 1], jittered `rgb`."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    rgb: tuple[int, int, int]

    @property
    def radius(self) -> float:
        return SIZES[self.size] / 2

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "x": self.x,
            "y": self.y,
            "rgb": list(self.rgb),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "object") -> SceneObject:
        missing = [k for k in ("shape", "colour", "size", "x", "y", "rgb") if k not in d]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        _check_choice(f"{where}.shape", d["shape"], SHAPES)
        _check_choice(f"{where}.colour", d["colour"], COLOUR_NAMES)
        _check_choice(f"{where}.size", d["size"], SIZE_NAMES)
        rgb = tuple(int(c) for c in d["rgb"])
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError(f"{where}.rgb: expected 3 ints in [0, 255], got {d['rgb']!r}")
        x, y = float(d["x"]), float(d["y"])
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"{where}.x/y: expected values in [0, 1], got ({x}, {y})")
        return cls(d["shape"], d["colour"], d["size"], x, y, rgb)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Scene:
    """A scene graph: 1-3 objects and the seed of the background noise.

    Frozen and hashable, so the oracle can cache per-scene automata. `relations()` derives the
    labelled spatial relations from the geometry.
    """

    objects: tuple[SceneObject, ...]
    noise_seed: int = 0

    def __post_init__(self) -> None:
        # Accept any sequence but store a tuple, so that scenes stay hashable.
        object.__setattr__(self, "objects", tuple(self.objects))

    def to_json(self) -> dict[str, Any]:
        """The scene graph as a JSON-serialisable dict (what `KEY.json` holds)."""
        return {
            "objects": [o.to_json() for o in self.objects],
            "noise_seed": self.noise_seed,
            "relations": [[i, rel, j] for i, rel, j in self.relations()],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Scene:
        """Reads `to_json()` output. Extra keys (caption, preset, derived relations) are ignored."""
        if not isinstance(d, Mapping) or "objects" not in d:
            raise ValueError("scene: expected a dict with an 'objects' list")
        objs = d["objects"]
        if not isinstance(objs, Sequence) or not 1 <= len(objs) <= MAX_OBJECTS:
            raise ValueError(f"scene.objects: expected 1-{MAX_OBJECTS} objects, got {objs!r}")
        objects = tuple(SceneObject.from_json(o, f"scene.objects[{k}]") for k, o in enumerate(objs))
        return cls(objects, int(d.get("noise_seed", 0)))

    def relations(self) -> list[tuple[int, str, int]]:
        """Every labelled relation `(subject index, relation, object index)`, in a fixed order."""
        return [
            (i, rel, j)
            for i, j in itertools.permutations(range(len(self.objects)), 2)
            for rel in RELATIONS
            if relation_holds(self.objects[i], rel, self.objects[j])
        ]


def _check_choice(field: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{field}: unknown value {value!r}; known: {', '.join(choices)}")


def relation_holds(a: SceneObject, rel: str, b: SceneObject) -> bool:
    """Whether `a rel b` holds with the clear margin (centre distance >= MARGIN on that axis)."""
    if rel == "left of":
        return b.x - a.x >= MARGIN
    if rel == "right of":
        return a.x - b.x >= MARGIN
    if rel == "above":
        return b.y - a.y >= MARGIN
    if rel == "below":
        return a.y - b.y >= MARGIN
    raise ValueError(f"relation: unknown value {rel!r}; known: {', '.join(RELATIONS)}")


def _axis_ok(d: float) -> bool:
    d = abs(d)
    return d <= ALIGNED or d >= MARGIN


def placement_ok(a: SceneObject, b: SceneObject) -> bool:
    """No overlap (with GAP) and no borderline relation between `a` and `b`."""
    return _placement_ok(a.x, a.y, a.radius, b)


def _placement_ok(x: float, y: float, r: float, b: SceneObject) -> bool:
    dx, dy = x - b.x, y - b.y
    return math.hypot(dx, dy) >= r + b.radius + GAP and _axis_ok(dx) and _axis_ok(dy)


def in_bounds(o: SceneObject) -> bool:
    lo, hi = o.radius + BORDER, 1.0 - o.radius - BORDER
    return lo - 1e-9 <= o.x <= hi + 1e-9 and lo - 1e-9 <= o.y <= hi + 1e-9


def is_valid(scene: Scene) -> bool:
    """Every object inside the image, no overlaps, no borderline relations, distinct kinds."""
    objs = scene.objects
    kinds = {(o.colour, o.shape) for o in objs}
    return (
        len(kinds) == len(objs)
        and all(in_bounds(o) for o in objs)
        and all(placement_ok(a, b) for a, b in itertools.combinations(objs, 2))
    )


def jitter_rgb(colour: str, rng: random.Random) -> tuple[int, int, int]:
    base = COLOURS[colour]
    span = 2 * COLOUR_JITTER + 1
    return tuple(  # type: ignore[return-value]
        min(255, max(0, c + int(rng.random() * span) - COLOUR_JITTER)) for c in base
    )


def choose(rng: random.Random, options: Sequence[Any]) -> Any:
    """A uniform choice using only `random()`, whose stream Python guarantees across versions."""
    return options[int(rng.random() * len(options))]


def sample_object(
    rng: random.Random, placed: Sequence[SceneObject], max_tries: int = 50
) -> SceneObject | None:
    """Draws attributes, then rejection-samples a position compatible with `placed`."""
    shape = choose(rng, SHAPES)
    colour = choose(rng, COLOUR_NAMES)
    if any(o.shape == shape and o.colour == colour for o in placed):
        return None  # two identical objects would make captions ambiguous
    size = choose(rng, SIZE_NAMES)
    r = SIZES[size] / 2
    lo, span = r + BORDER, 1.0 - 2 * (r + BORDER)
    for _ in range(max_tries):
        # Rounded so that the JSON round trip is exact and readable.
        x, y = round(lo + span * rng.random(), 4), round(lo + span * rng.random(), 4)
        if all(_placement_ok(x, y, r, p) for p in placed):
            return SceneObject(shape, colour, size, x, y, jitter_rgb(colour, rng))
    return None


def sample_objects(rng: random.Random, num_objects: int) -> Scene:
    """A random valid scene with exactly `num_objects` objects (rejection sampling)."""
    if not 1 <= num_objects <= MAX_OBJECTS:
        raise ValueError(f"num_objects: expected 1-{MAX_OBJECTS}, got {num_objects}")
    while True:
        placed: list[SceneObject] = []
        while len(placed) < num_objects:
            obj = sample_object(rng, placed)
            if obj is None:
                break
            placed.append(obj)
        if len(placed) == num_objects:
            return Scene(tuple(placed), int(rng.random() * 2**31))


def with_objects(scene: Scene, objects: Sequence[SceneObject]) -> Scene:
    """The same scene (same background noise) with other objects: pixel-space swaps."""
    return dataclasses.replace(scene, objects=tuple(objects))
