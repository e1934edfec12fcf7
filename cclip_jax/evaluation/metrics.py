"""Metrics over score and similarity matrices (numpy only: no model, no JAX).

**Ties.** Every metric returns its *exact expected value* when ties between scores are broken
uniformly at random. Breaking ties by index instead (what `argmax` does) rewards or punishes a
model for the order of the data: a blind model that gives every caption the same score would
score 0 or 1 on a pair task depending on which caption comes first. With the expectation, a
blind model sits exactly at chance: 0.5 on pairs, 1/4, 1/4 and 1/6 on Winoground's text, image
and group scores, k/C for top-k accuracy over C classes.

**Closed form for retrieval with ties.** For one query, let `g` be the number of wrong items
scored strictly above the best correct item, and `t` wrong and `m` correct items tied at that
score (`m >= 1`). In a uniformly random order of the `t + m` tied items, the number `X` of wrong
items before the first correct one satisfies

    P(X >= j) = C(t, j) / C(t + m, j) = prod_{i<j} (t - i) / (t + m - i)

(the first `j` items of the order are a uniform `j`-subset; all of them must be wrong). The
correct item is within the top `k` iff `g + X < k`, so `P(hit@k) = 1 - P(X >= k - g)`, which is
0 when `k <= g` and 1 when `k - g > t`. `E[X] = t / (m + 1)`.

**Precision@k with ties.** An item in a tie group of size `e` with `g` candidates strictly above
it is among the top `k` with probability `clip(k - g, 0, e) / e` (the slots left for the group,
shared uniformly); the expected precision is the sum of these over relevant items, over `k`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

# Rows of a score matrix handled at once: bounds the temporaries of the rank computations
# (COCO's 5k x 25k similarity would otherwise need several 125M-element boolean arrays).
_BLOCK_ELEMENTS = 1 << 22

# The 24 orders of Winoground's 4 scores, as tie-break ranks (higher wins a tie).
_PERMS4 = np.array(list(itertools.permutations(range(4))))


def _scores(x: object, name: str, ndim: int, shape_doc: str) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)  # float32 similarities stay float32: no 2x copy of a big matrix
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {shape_doc}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (NaN or inf found) in an array of shape {a.shape}")
    return a


def _ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


# ----------------------------------------------------------------------------- pairs


def pair_correct(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Per item: 1 if `pos > neg`, 0.5 if equal, 0 otherwise. `[N], [N] -> float64 [N]`."""
    p = _scores(pos, "pos", 1, "[N]")
    n = _scores(neg, "neg", 1, "[N]")
    if p.shape != n.shape:
        raise ValueError(f"pos and neg must have the same shape [N], got {p.shape} and {n.shape}")
    return (p > n) + 0.5 * (p == n)


def pair_accuracy(pos: np.ndarray, neg: np.ndarray) -> float:
    """Expected accuracy of picking the higher-scored of a true and a false caption.

    Args:
      pos: `[N]` score of each item's true caption.
      neg: `[N]` score of its false caption.
    """
    c = pair_correct(pos, neg)
    if not len(c):
        raise ValueError("pair_accuracy: no items (pos has shape (0,))")
    return float(c.mean())


# ------------------------------------------------------------------------ winoground


def winoground_correct(s: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item expected text, image and group scores: `[N, 2, 2] -> {key: float64 [N]}`.

    `s[n, c, i]` scores caption `c` with image `i`; caption `i` is the true one for image `i`.
    """
    s = _scores(s, "s", 3, "[N, 2, 2] (caption, image)")
    if s.shape[1:] != (2, 2):
        raise ValueError(f"s must be [N, 2, 2] (caption, image), got shape {s.shape}")
    f = s.reshape(len(s), 4)  # columns: c0i0, c0i1, c1i0, c1i1

    def beats(a: int, b: int) -> np.ndarray:  # [N, 24]: a above b in each tie-break order
        tie_win = _PERMS4[None, :, a] > _PERMS4[None, :, b]
        return (f[:, a] > f[:, b])[:, None] | ((f[:, a] == f[:, b])[:, None] & tie_win)

    text = beats(0, 2) & beats(3, 1)  # each image prefers its own caption
    image = beats(0, 1) & beats(3, 2)  # each caption prefers its own image
    return {"text": text.mean(1), "image": image.mean(1), "group": (text & image).mean(1)}


def winoground_scores(s: np.ndarray) -> dict[str, float]:
    """Winoground's text, image and group scores (expected under random tie-breaking).

    Args:
      s: `[N, 2, 2]`, `s[n, c, i]` the score of caption `c` with image `i`; caption `i` is
        true of image `i`.

    Returns:
      `{"text", "image", "group"}`; chance (all scores equal) is 1/4, 1/4, 1/6.
    """
    per_item = winoground_correct(s)
    if not len(per_item["text"]):
        raise ValueError("winoground_scores: no items (s has shape (0, 2, 2))")
    return {k: float(v.mean()) for k, v in per_item.items()}


# ------------------------------------------------------------------------- retrieval


def _hits_block(scores: np.ndarray, correct: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """`[Q, C]` scores and bool correct -> `[Q, len(ks)]` P(a correct item is in the top k)."""
    best = np.max(np.where(correct, scores, -np.inf), axis=1, keepdims=True)
    above = np.sum(scores > best, axis=1)  # all wrong: `best` is the best correct score
    tied = scores == best
    m = np.sum(tied & correct, axis=1)
    t = np.sum(tied & ~correct, axis=1)
    i = np.arange(max(ks))
    # survival[:, j] = P(X >= j + 1) = prod_{i <= j} (t - i) / (t + m - i); zero once i >= t,
    # so clamping the denominator (only reached past that point) never changes a value.
    factors = np.clip(t[:, None] - i, 0, None) / np.maximum(t[:, None] + m[:, None] - i, 1)
    survival = np.cumprod(factors, axis=1)
    out = np.empty((len(scores), len(ks)))
    for col, k in enumerate(ks):
        j = k - above
        out[:, col] = np.where(
            j <= 0, 0.0, 1.0 - survival[np.arange(len(j)), np.clip(j, 1, None) - 1]
        )
    return out


def _row_blocks(shape: tuple[int, ...]) -> list[slice]:
    """Row slices of a `[Q, C]` matrix, each small enough to bound the temporaries."""
    rows = max(1, _BLOCK_ELEMENTS // max(shape[1], 1))
    return [slice(r, min(r + rows, shape[0])) for r in range(0, shape[0], rows)]


def _blockwise_hits(
    scores: np.ndarray, correct_rows: Callable[[np.ndarray], np.ndarray], ks: tuple[int, ...]
) -> np.ndarray:
    """`_hits_block` over row blocks; `correct_rows(rows)` builds the bool mask of those rows."""
    out = [
        _hits_block(scores[b], correct_rows(np.arange(b.start, b.stop)), ks)
        for b in _row_blocks(scores.shape)
    ]
    return np.concatenate(out) if out else np.zeros((0, len(ks)))


def expected_hits(
    scores: np.ndarray, correct: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> np.ndarray:
    """Per query, the probability that its best-ranked correct item is within the top k.

    Args:
      scores: `[Q, C]` score of each candidate for each query.
      correct: bool `[Q, C]`; every query needs at least one correct candidate.
      ks: cut-offs.

    Returns:
      float64 `[Q, len(ks)]` (the closed form in the module docstring).
    """
    s = _scores(scores, "scores", 2, "[Q, C]")
    c = np.asarray(correct, bool)
    if c.shape != s.shape:
        raise ValueError(f"correct must have the shape of scores {s.shape}, got {c.shape}")
    empty = np.flatnonzero(~c.any(axis=1))
    if len(empty):
        raise ValueError(f"query {empty[0]} has no correct candidate ({len(empty)} such)")
    return _blockwise_hits(s, lambda rows: c[rows], _ks(ks))


def retrieval_recall(
    sim: np.ndarray, txt_to_img: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Image->text and text->image recall@k, several captions per image.

    Args:
      sim: `[N_img, N_txt]` similarity.
      txt_to_img: int `[N_txt]`, the image of each caption; every image needs one caption.
      ks: cut-offs.

    Returns:
      `{"i2t_r{k}", "t2i_r{k}"}` fractions in [0, 1]. An image hits at k when any of its
      captions is within its top k; a caption has exactly one correct image.
    """
    s = _scores(sim, "sim", 2, "[N_img, N_txt]")
    t2i = np.asarray(txt_to_img)
    n_img, n_txt = s.shape
    if t2i.shape != (n_txt,) or not np.issubdtype(t2i.dtype, np.integer):
        raise ValueError(f"txt_to_img must be int [N_txt] = [{n_txt}], got {t2i.dtype} {t2i.shape}")
    if n_txt and (t2i.min() < 0 or t2i.max() >= n_img):
        raise ValueError(
            f"txt_to_img values must be image indices in [0, {n_img}), got "
            f"[{t2i.min()}, {t2i.max()}]"
        )
    no_caption = np.flatnonzero(np.bincount(t2i, minlength=n_img) == 0)
    if len(no_caption):
        raise ValueError(
            f"retrieval_recall: image {no_caption[0]} has no caption in "
            f"txt_to_img ({len(no_caption)} images without one)"
        )
    ks = _ks(ks)
    i2t = _blockwise_hits(s, lambda rows: t2i[None, :] == rows[:, None], ks).mean(0)
    t2i_hits = _blockwise_hits(
        s.T, lambda rows: np.arange(n_img)[None, :] == t2i[rows, None], ks
    ).mean(0)
    return {
        **{f"i2t_r{k}": float(v) for k, v in zip(ks, i2t, strict=True)},
        **{f"t2i_r{k}": float(v) for k, v in zip(ks, t2i_hits, strict=True)},
    }


def topk_accuracy(
    logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracy (zero-shot classification), expected under random tie-breaking.

    Args:
      logits: `[N, C]` score of each class for each example.
      labels: int `[N]` true class.
      ks: cut-offs (k >= C always hits).

    Returns:
      `{"top{k}"}` fractions in [0, 1].
    """
    s = _scores(logits, "logits", 2, "[N, C]")
    y = np.asarray(labels)
    if y.shape != (len(s),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be int [N] = [{len(s)}], got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= s.shape[1]):
        raise ValueError(
            f"labels must be class indices in [0, {s.shape[1]}), got [{y.min()}, {y.max()}]"
        )
    if not len(y):
        raise ValueError("topk_accuracy: no examples (logits has shape (0, C))")
    ks = _ks(ks)
    hits = _blockwise_hits(s, lambda rows: np.arange(s.shape[1])[None, :] == y[rows, None], ks)
    return {f"top{k}": float(v) for k, v in zip(ks, hits.mean(0), strict=True)}


# ------------------------------------------------------------------------- precision


def _precision_block(
    s: np.ndarray, rel: np.ndarray, n_cand: np.ndarray, ks: tuple[int, ...]
) -> np.ndarray:
    """`[Q, N]` scores (excluded items at -inf), relevance, `[Q]` candidate counts ->
    `[Q, len(ks)]` expected precision@k."""
    q, n = s.shape
    order = np.argsort(-s, axis=1, kind="stable")
    sv = np.take_along_axis(s, order, axis=1)
    rv = np.take_along_axis(rel, order, axis=1)
    idx = np.broadcast_to(np.arange(n), (q, n))
    first = np.concatenate([np.ones((q, 1), bool), sv[:, 1:] != sv[:, :-1]], axis=1)
    last = np.concatenate([sv[:, :-1] != sv[:, 1:], np.ones((q, 1), bool)], axis=1)
    start = np.maximum.accumulate(np.where(first, idx, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, idx, n)[:, ::-1], axis=1)[:, ::-1] + 1
    size = end - start
    out = np.empty((q, len(ks)))
    for col, k in enumerate(ks):
        k_eff = np.minimum(k, n_cand)[:, None]
        # Excluded items sit at -inf after all n_cand >= k_eff candidates: no slot reaches them.
        p_in = np.clip(k_eff - start, 0, size) / size
        out[:, col] = np.sum(p_in * rv, axis=1) / k_eff[:, 0]
    return out


def precision_at_k(
    scores: np.ndarray,
    relevant: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    exclude: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean over queries of the expected fraction of relevant items among the top k.

    Args:
      scores: `[Q, N]` score of each candidate for each query.
      relevant: bool `[Q, N]`.
      ks: cut-offs. A query with fewer than k candidates divides by its candidate count.
      exclude: optional bool `[Q, N]`: items removed from a query's candidates (e.g. the query
        image itself); each query needs at least one candidate left.

    Returns:
      `{"p{k}"}` in [0, 1].
    """
    s = _scores(scores, "scores", 2, "[Q, N]")
    rel = np.asarray(relevant, bool)
    if rel.shape != s.shape:
        raise ValueError(f"relevant must have the shape of scores {s.shape}, got {rel.shape}")
    excl = np.zeros(s.shape, bool) if exclude is None else np.asarray(exclude, bool)
    if excl.shape != s.shape:
        raise ValueError(f"exclude must have the shape of scores {s.shape}, got {excl.shape}")
    if not len(s):
        raise ValueError("precision_at_k: no queries (scores has shape (0, N))")
    n_cand = s.shape[1] - excl.sum(axis=1)
    if np.any(n_cand == 0):
        raise ValueError(
            f"query {np.flatnonzero(n_cand == 0)[0]} has no candidate left after exclude"
        )
    ks = _ks(ks)
    s = np.where(excl, -np.inf, s)
    out = np.concatenate(
        [_precision_block(s[b], rel[b], n_cand[b], ks) for b in _row_blocks(s.shape)]
    )
    return {f"p{k}": float(v) for k, v in zip(ks, out.mean(0), strict=True)}
