"""Masked captions: the shared structure of two captions, `<M>` for each gap.

The alignment is a longest common subsequence over tokens where each matched token scores its
IDF, so content words ("grey", "front", "black") win over stop words when they compete. Both
the alignment and the matcher used for labels are numba loops over int token ids (about a
microsecond per pair), so they run per neighbour pair at corpus scale.

A pattern is an int array of token ids with `GAP` (-1) for each `<M>`; gaps are collapsed, and a
`<M>` stands for any run of zero or more tokens when a pattern is matched against a caption.
"""

from __future__ import annotations

import numba
import numpy as np

from cclip_jax.curation import text

GAP = -1


@numba.njit(cache=True)
def _align(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    n, m = len(a), len(b)
    score = np.zeros((n + 1, m + 1), dtype=np.float64)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            best = max(score[i - 1, j], score[i, j - 1])
            if a[i - 1] == b[j - 1]:
                best = max(best, score[i - 1, j - 1] + weight[a[i - 1]])
            score[i, j] = best
    # Traceback, preferring a match when it is on an optimal path (deterministic ties).
    out = np.empty((min(n, m), 2), dtype=np.int64)
    k = 0
    i, j = n, m
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1] and score[i, j] == score[i - 1, j - 1] + weight[a[i - 1]]:
            out[k, 0] = i - 1
            out[k, 1] = j - 1
            k += 1
            i -= 1
            j -= 1
        elif score[i - 1, j] >= score[i, j - 1]:
            i -= 1
        else:
            j -= 1
    return out[:k][::-1]


@numba.njit(cache=True)
def _pattern(a: np.ndarray, b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    out = np.empty(2 * len(pairs) + 1, dtype=np.int64)
    k = 0
    prev_i, prev_j = -1, -1
    for p in range(len(pairs)):
        i, j = pairs[p, 0], pairs[p, 1]
        if (i > prev_i + 1 or j > prev_j + 1) and (k == 0 or out[k - 1] != GAP):
            out[k] = GAP
            k += 1
        out[k] = a[i]
        k += 1
        prev_i, prev_j = i, j
    if prev_i < len(a) - 1 or prev_j < len(b) - 1:
        out[k] = GAP
        k += 1
    return out[:k]


def align(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """IDF-weighted LCS alignment of two token-id sequences.

    Args:
      a: int [n] token ids; b: int [m] token ids.
      weight: float [V] weight per token id (IDF).

    Returns:
      int64 [L, 2], the matched `(index in a, index in b)` pairs in increasing order.
    """
    return _align(np.asarray(a, np.int64), np.asarray(b, np.int64), weight)


def masked_pattern(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The masked caption of `a` and `b` as a pattern (int64 [P], `GAP` for `<M>`)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    pairs = _align(a, b, weight)
    if len(pairs) == 0:
        return np.array([GAP], dtype=np.int64)
    return _pattern(a, b, pairs)


def pattern_string(pattern: np.ndarray, vocab: list[str]) -> str:
    """Renders a pattern, e.g. `<M> a grey <M> in front of <M> black <M>`."""
    return " ".join(text.MASK if t == GAP else vocab[t] for t in pattern.tolist())


def has_content(pattern: np.ndarray, vocab: list[str]) -> bool:
    """True when the pattern keeps at least one content word (the masked-caption filter)."""
    return any(t != GAP and text.is_content_word(vocab[t]) for t in pattern.tolist())


@numba.njit(cache=True)
def _match_at(pattern: np.ndarray, s0: int, s1: int, seq: np.ndarray, p: int) -> bool:
    for q in range(s1 - s0):
        if seq[p + q] != pattern[s0 + q]:
            return False
    return True


@numba.njit(cache=True)
def _matches(pattern: np.ndarray, seq: np.ndarray) -> bool:
    n = len(seq)
    lead = len(pattern) > 0 and pattern[0] == GAP
    trail = len(pattern) > 0 and pattern[len(pattern) - 1] == GAP
    pos = 0
    s = 0
    first = True
    while s < len(pattern):
        if pattern[s] == GAP:
            s += 1
            continue
        e = s
        while e < len(pattern) and pattern[e] != GAP:
            e += 1
        seg = e - s
        last = e >= len(pattern)
        if first and not lead:
            if seg > n or not _match_at(pattern, s, e, seq, 0):
                return False
            pos = seg
        elif last and not trail:
            if n - seg < pos or not _match_at(pattern, s, e, seq, n - seg):
                return False
            pos = n
        else:
            # Leftmost occurrence: greedy is optimal for in-order segment matching.
            found = -1
            for p in range(pos, n - seg + 1):
                if _match_at(pattern, s, e, seq, p):
                    found = p
                    break
            if found < 0:
                return False
            pos = found + seg
        first = False
        s = e
    if not trail and pos != n:
        return False
    return True


@numba.njit(cache=True)
def _match_rows(
    pattern: np.ndarray, tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    out = np.zeros(len(rows), dtype=np.bool_)
    for r in range(len(rows)):
        i = rows[r]
        out[r] = _matches(pattern, tokens[offsets[i] : offsets[i + 1]])
    return out


def matches(pattern: np.ndarray, seq: np.ndarray) -> bool:
    """True when `seq` (int [n] token ids) contains the pattern's segments in order."""
    return bool(_matches(np.asarray(pattern, np.int64), np.asarray(seq, np.int64)))


def match_rows(
    pattern: np.ndarray, tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """`matches` for captions `rows` of a CSR corpus; returns bool [len(rows)]."""
    return _match_rows(np.asarray(pattern, np.int64), tokens, offsets, np.asarray(rows, np.int64))
