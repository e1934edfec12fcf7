"""Batch concepts and their labels: +1 present, -1 surely absent (by a rule), 0 unknown.

For every caption of a batch against every concept of that batch: `+1` when the caption
contains the concept (the n-gram, or for a masked caption its segments in order), otherwise a
pluggable *rule* decides whether the absence is sure (`-1`) or unknown (`0`). Rules:

  * `none`: the seed's easy approach; everything not present is `0`.
  * `complete`: complete-caption datasets (every object and attribute is mentioned), so an
    absent n-gram is `-1`. Masked captions stay `0`: word order varies between true captions.
  * `attribute`: attribute contradiction: the concept says "red car", the caption mentions a
    "blue car" (same noun, another value of the same attribute class) and not "red car".

Register more with `register_rule`. The loss needs at most R (`max_present`) `+1` per row, so
rows with more keep their R most shared concepts and the rest become `0` (counted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from cclip_jax.curation import masked, text


@dataclasses.dataclass(frozen=True)
class BatchView:
    """What a rule sees of one batch.

    Attributes:
      vocab: token strings (pool-local ids index into it).
      rows: B arrays of token ids, one per caption.
      concepts: K token lists (masked captions contain `text.MASK`).
      is_masked: bool [K].
      present: bool [B, K].
      attr_class: int [V], attribute class index of each token (-1 when none).
    """

    vocab: list[str]
    rows: list[np.ndarray]
    concepts: list[list[str]]
    is_masked: np.ndarray
    present: np.ndarray
    attr_class: np.ndarray


Rule = Callable[[BatchView], np.ndarray]
RULES: dict[str, Rule] = {}
_CLASS_NAMES = sorted(text.ATTRIBUTE_CLASSES)


def register_rule(name: str) -> Callable[[Rule], Rule]:
    """Decorator: makes a rule available as `config.label_rule = name`."""

    def wrap(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return wrap


def attribute_classes(vocab: list[str]) -> np.ndarray:
    """int32 [V]: index into the sorted attribute class names, -1 for other tokens."""
    return np.array(
        [_CLASS_NAMES.index(text.ATTRIBUTE_OF[t]) if t in text.ATTRIBUTE_OF else -1
         for t in vocab], dtype=np.int32)


@register_rule("none")
def no_negatives(view: BatchView) -> np.ndarray:
    """Everything not present is unknown."""
    return np.zeros_like(view.present)


@register_rule("complete")
def complete_captions(view: BatchView) -> np.ndarray:
    """Absent n-grams are surely absent; masked captions stay unknown."""
    return ~view.present & ~view.is_masked[None, :]


def _attribute_pairs(tokens: list[str]) -> list[tuple[int, str, str]]:
    """(class, value, noun) for each attribute word; its noun is the first content word after
    the run of attribute words it is in ("small red square": small->square, red->square)."""
    out = []
    for p, a in enumerate(tokens):
        if a not in text.ATTRIBUTE_OF:
            continue
        q = p + 1
        while q < len(tokens) and tokens[q] in text.ATTRIBUTE_OF:
            q += 1
        if q < len(tokens) and text.is_content_word(tokens[q]):
            out.append((_CLASS_NAMES.index(text.ATTRIBUTE_OF[a]), a, tokens[q]))
    return out


@register_rule("attribute")
def attribute_contradiction(view: BatchView) -> np.ndarray:
    """Same noun, another value of the same attribute class: surely absent."""
    neg = np.zeros_like(view.present)
    wanted = [(k, _attribute_pairs(c)) for k, c in enumerate(view.concepts)
              if not view.is_masked[k]]
    wanted = [(k, p) for k, p in wanted if p]
    if not wanted:
        return neg
    # Index the batch's (class, noun) -> [(row, value)] once; concepts then look nouns up.
    seen: dict[tuple[int, str], list[tuple[int, str]]] = {}
    for b, row in enumerate(view.rows):
        if not (view.attr_class[row] >= 0).any():  # most rows: no attribute word at all
            continue
        for c, value, noun in _attribute_pairs([view.vocab[t] for t in row.tolist()]):
            seen.setdefault((c, noun), []).append((b, value))
    for k, pairs in wanted:
        for c, value, noun in pairs:
            for b, other in seen.get((c, noun), ()):
                if other != value:
                    neg[b, k] = True
    return neg & ~view.present


def cap_present(present: np.ndarray, max_present: int) -> tuple[np.ndarray, int]:
    """Keeps at most `max_present` present concepts per row, the leftmost (most shared) ones.

    Args:
      present: bool [B, K], columns ordered by priority.
      max_present: R.

    Returns:
      The capped bool [B, K] and how many `+1` were turned into `0`.
    """
    rank = np.cumsum(present, axis=1)
    capped = present & (rank <= max_present)
    return capped, int(present.sum() - capped.sum())


def label_matrix(view: BatchView, rule: str, max_present: int, width: int
                 ) -> tuple[np.ndarray, dict[str, int]]:
    """The int8 labels of one batch, padded to `width` columns with 0.

    Args:
      view: the batch (K <= width concepts).
      rule: a name in `RULES`.
      max_present: R, the cap on `+1` per row.
      width: padded concept count (`max_concepts`).

    Returns:
      int8 [B, width] in {+1, -1, 0}, and counts (`capped`: `+1` dropped by the cap).
    """
    negative = RULES[rule](view) & ~view.present
    present, capped = cap_present(view.present, max_present)
    labels = np.zeros((len(view.rows), width), dtype=np.int8)
    k = view.present.shape[1]
    labels[:, :k][negative] = -1
    labels[:, :k][present] = 1
    return labels, {"capped": capped}


def masked_present(pattern: np.ndarray, tokens: np.ndarray, offsets: np.ndarray,
                   rows: np.ndarray) -> np.ndarray:
    """bool [B]: which captions contain the masked caption's segments in order."""
    return masked.match_rows(pattern, tokens, offsets, rows)
