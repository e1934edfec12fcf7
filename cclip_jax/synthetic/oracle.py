"""The ground-truth oracle: does a phrase of the caption grammar hold in a scene?

`holds(scene, phrase)` answers for every phrase the grammar can produce: single words ("red",
"circle", "left"), n-grams ("red square", "left of", "square left of a"), whole captions, and
masked captions where `<M>` stands for any run of zero or more words
(`<M> red <M> left of <M> blue <M>`).

Semantics: a phrase holds iff it occurs (as a contiguous run of words, `<M>` matching any run)
inside some caption of the grammar that is *true* of the scene, with clauses joined by "and"
each true on their own. So "red square" holds iff there is a red square; "square left of a blue"
iff some square is clearly left of some blue object; "of" iff some object is left or right of
another. `None` means the phrase occurs in no caption of the grammar at all (unknown words,
"red small circle", "left a").

A gap stays inside one clause: it never spans an "and". So "<M> red <M> left of <M> blue <M>"
means "something red is left of something blue", whatever else the caption says. That is the
meaning a masked caption is meant to carry, and what curation labels are scored against. Text
matching can disagree: the pattern matches the text "a red star and a square left of a blue
circle" even when the red star is right of the blue circle; the oracle then says False, and that
label counts as wrong. `within_clause=False` gives the purely textual reading instead (a gap may
jump between clauses, so any pattern that matches a true caption's text holds).

Implementation: captions true of a scene form a regular language. We build its automaton over
words (states carry which object a noun phrase refers to), and run the phrase through it
starting from every state (a phrase may start anywhere in a caption); `<M>` moves to every state
reachable from the current ones (without an "and" step, unless `within_clause=False`). The same
construction over one "any object" that has every attribute and every relation with itself
gives the whole grammar, which decides `None`. The automaton is cached per scene, so scoring
many concepts against one scene is cheap.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

from cclip_jax.synthetic.scene import (
    COLOUR_NAMES,
    RELATIONS,
    SHAPES,
    SIZE_NAMES,
    Scene,
    relation_holds,
)

MASK = "<m>"  # compared after lower-casing, so `<M>` and `<m>` both work

State = tuple
Transitions = dict[State, dict[str, tuple[State, ...]]]

_START: State = ("start",)


@dataclasses.dataclass(frozen=True)
class _Referent:
    """What a noun phrase may name: the words usable for size, colour and shape."""

    sizes: frozenset[str]
    colours: frozenset[str]
    shapes: frozenset[str]


@dataclasses.dataclass(frozen=True)
class _Automaton:
    trans: Transitions
    reach: dict[State, frozenset[State]]  # reachable in zero or more steps
    reach_in_clause: dict[State, frozenset[State]]  # the same, never taking an "and" step


def _build(referents: Sequence[_Referent], related: Callable[[int, str, int], bool]) -> _Automaton:
    """Automaton of true captions; `related(i, rel, j)` says whether `i rel j` holds."""
    n = len(referents)
    trans: Transitions = {}

    def np_edges(role: int, i: int, stage: int) -> dict[str, list[State]]:
        ref = referents[i]
        edges: dict[str, list[State]] = {}
        # stage 0: after "a"; 1: after the size; 2: after the colour. Shape ends the phrase.
        if stage == 0:
            for w in ref.sizes:
                edges.setdefault(w, []).append(("np", role, i, 1))
        if stage <= 1:
            for w in ref.colours:
                edges.setdefault(w, []).append(("np", role, i, 2))
        for w in ref.shapes:
            edges.setdefault(w, []).append(("end", role, i))
        return edges

    def edges_of(state: State) -> dict[str, list[State]]:
        kind = state[0]
        if kind == "start":
            return {"a": [("np", 1, i, 0) for i in range(n)]}
        if kind == "np":
            return np_edges(*state[1:])
        if kind == "end":
            role, i = state[1:]
            edges: dict[str, list[State]] = {"and": [_START]}
            if role == 1:
                for rel in RELATIONS:
                    if any(related(i, rel, j) for j in range(n)):
                        first = rel.split()[0]
                        nxt = ("half", i, rel) if " " in rel else ("rel", i, rel)
                        edges.setdefault(first, []).append(nxt)
            return edges
        if kind == "half":
            return {"of": [("rel", *state[1:])]}
        # "rel": the object of the relation must be a j that i stands in relation to.
        i, rel = state[1:]
        return {"a": [("np", 2, j, 0) for j in range(n) if related(i, rel, j)]}

    todo = [_START]
    while todo:
        s = todo.pop()
        if s in trans:
            continue
        edges = {w: tuple(dict.fromkeys(ts)) for w, ts in edges_of(s).items() if ts}
        trans[s] = edges
        todo.extend(t for ts in edges.values() for t in ts if t not in trans)

    return _Automaton(trans, _closure(trans, cross_and=True), _closure(trans, cross_and=False))


def _closure(trans: Transitions, cross_and: bool) -> dict[State, frozenset[State]]:
    reach = {}
    for s in trans:
        seen = {s}
        stack = [s]
        while stack:
            for word, ts in trans[stack.pop()].items():
                if word == "and" and not cross_and:
                    continue
                for t in ts:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
        reach[s] = frozenset(seen)
    return reach


@functools.cache
def _grammar() -> _Automaton:
    anything = _Referent(frozenset(SIZE_NAMES), frozenset(COLOUR_NAMES), frozenset(SHAPES))
    return _build([anything], lambda i, rel, j: True)


@functools.lru_cache(maxsize=8192)
def _scene_automaton(scene: Scene) -> _Automaton:
    objs = scene.objects
    refs = [
        _Referent(frozenset([o.size]), frozenset([o.colour]), frozenset([o.shape])) for o in objs
    ]
    return _build(refs, lambda i, rel, j: i != j and relation_holds(objs[i], rel, objs[j]))


def tokenize(phrase: str) -> list[str]:
    """Lower-cased words of `phrase`; `<M>` becomes its own token even without spaces.

    "an" is read as "a": the article only follows the next word's spelling, never the scene.
    """
    text = phrase.strip().lower().rstrip(".").replace(MASK, f" {MASK} ")
    return ["a" if w == "an" else w for w in text.split()]


def _accepts(auto: _Automaton, tokens: Sequence[str], within_clause: bool = True) -> bool:
    reach = auto.reach_in_clause if within_clause else auto.reach
    current: set[State] | frozenset[State] = frozenset(auto.trans)  # start anywhere
    for tok in tokens:
        if tok == MASK:
            current = set().union(*(reach[s] for s in current))
        else:
            current = {t for s in current for t in auto.trans[s].get(tok, ())}
        if not current:
            return False
    # Every state can be completed into a whole true caption, so any survivor is a witness.
    return True


@functools.lru_cache(maxsize=65536)
def in_grammar(phrase: str) -> bool:
    """Whether `phrase` occurs in some caption of the grammar (of any scene)."""
    tokens = tokenize(phrase)
    return bool(tokens) and _accepts(_grammar(), tokens, within_clause=False)


def holds(scene: Scene, phrase: str, *, within_clause: bool = True) -> bool | None:
    """Whether `phrase` is true of `scene`; `None` if the phrase is outside the grammar.

    `phrase` may be a word, an n-gram, a whole caption, or a masked caption with `<M>` gaps.
    A gap stays inside one clause unless `within_clause=False` (see the module docstring).
    """
    if not in_grammar(phrase):
        return None
    return _accepts(_scene_automaton(scene), tokenize(phrase), within_clause)
