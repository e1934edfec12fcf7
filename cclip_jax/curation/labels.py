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

from cclip_jax.curation import text
from cclip_jax.curation.concepts import Corpus


@dataclasses.dataclass(frozen=True)
class AttributeTriples:
    """Every (attribute word, its noun) occurrence of a corpus, grouped by caption (CSR).

    Attributes:
      offsets: int64 [N + 1]; caption i owns entries `offsets[i]:offsets[i + 1]`.
      cls: int32 [M] attribute class; value: int64 [M] attribute token id; noun: int64 [M].
    """

    offsets: np.ndarray
    cls: np.ndarray
    value: np.ndarray
    noun: np.ndarray

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """(batch position, cls, value, noun) arrays for captions `rows` (int [B])."""
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        counts = stops - starts
        pos = np.repeat(np.arange(len(rows)), counts)
        idx = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        return pos, self.cls[idx], self.value[idx], self.noun[idx]


def attribute_triples(corpus: Corpus) -> AttributeTriples:
    """Finds, vectorised, each attribute word and the noun it qualifies: the first content
    word after its run of attribute words ("small red square": small->square, red->square)."""
    tok = corpus.tokens.astype(np.int64)
    n_tok = len(tok)
    cls_of = attribute_classes(corpus.vocab)
    content = np.array([text.is_content_word(t) for t in corpus.vocab], dtype=bool)
    tok_cls = cls_of[tok] if n_tok else np.zeros(0, np.int32)
    doc = np.repeat(np.arange(len(corpus)), np.diff(corpus.offsets))
    # nxt[p]: first position >= p that is not an attribute word (n_tok when none).
    non_attr = np.where(tok_cls < 0, np.arange(n_tok), n_tok)
    nxt = np.minimum.accumulate(non_attr[::-1])[::-1] if n_tok else non_attr
    p = np.flatnonzero(tok_cls >= 0)
    q = nxt[p]
    ok = q < n_tok
    p, q = p[ok], q[ok]
    ok = (doc[q] == doc[p]) & content[tok[q]]
    p, q = p[ok], q[ok]
    offsets = np.zeros(len(corpus) + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc[p], minlength=len(corpus)), out=offsets[1:])
    return AttributeTriples(offsets, tok_cls[p], tok[p], tok[q])


@dataclasses.dataclass(frozen=True)
class BatchView:
    """What a rule sees of one batch.

    Attributes:
      vocab: token strings (pool-local ids index into it).
      token_id: token string -> id, for the same vocabulary.
      rows: B arrays of token ids, one per caption.
      concepts: K token lists (masked captions contain `text.MASK`).
      is_masked: bool [K].
      present: bool [B, K].
      attributes: `AttributeTriples.take` of the batch's captions.
    """

    vocab: list[str]
    token_id: dict[str, int]
    rows: list[np.ndarray]
    concepts: list[list[str]]
    is_masked: np.ndarray
    present: np.ndarray
    attributes: tuple[np.ndarray, ...]


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
        [_CLASS_NAMES.index(text.ATTRIBUTE_OF[t]) if t in text.ATTRIBUTE_OF else -1 for t in vocab],
        dtype=np.int32,
    )


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
    pos, cls, value, noun = view.attributes
    wanted = [
        (k, c, view.token_id[v], view.token_id[n])
        for k, toks in enumerate(view.concepts)
        if not view.is_masked[k]
        for c, v, n in _attribute_pairs(toks)
    ]
    if not wanted or len(pos) == 0:
        return neg
    k, c, v, n = (np.array(x, dtype=np.int64) for x in zip(*wanted, strict=True))
    # [pairs, triples]: the caption has this noun with another value of the same class.
    hit = (
        (cls[None, :] == c[:, None])
        & (noun[None, :] == n[:, None])
        & (value[None, :] != v[:, None])
    )
    pi, ti = np.nonzero(hit)
    neg[pos[ti], k[pi]] = True
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


def label_matrix(
    view: BatchView, rule: str, max_present: int, width: int
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


def batch_view(
    words: Corpus,
    rows: np.ndarray,
    concepts: list[str],
    present: np.ndarray,
    triples: AttributeTriples | None = None,
    token_id: dict[str, int] | None = None,
) -> BatchView:
    """Builds the view of captions `rows` of `words` against concept strings.

    Args:
      words: the pool's captions; rows: int [B] captions of the batch.
      concepts: K concept strings (masked ones contain `<M>`); present: bool [B, K].
      triples, token_id: per-pool precomputations (computed here when not given).
    """
    triples = attribute_triples(words) if triples is None else triples
    token_id = {t: i for i, t in enumerate(words.vocab)} if token_id is None else token_id
    return BatchView(
        vocab=words.vocab,
        token_id=token_id,
        rows=[words.row(r) for r in rows.tolist()],
        concepts=[c.split(" ") for c in concepts],
        is_masked=np.array([text.MASK in c for c in concepts], dtype=bool).reshape(-1),
        present=present,
        attributes=triples.take(np.asarray(rows, np.int64)),
    )
