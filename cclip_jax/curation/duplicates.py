"""The duplicate cap of batch assembly (`max_duplicates`; see `batches.py`'s docstring).

A caption's identity is its normalised word-token row: exact duplicates share it. Per pool,
`DuplicateCap` holds each identity's limit (copies per batch), the copies in the open batch,
and the copies not yet placed; `batches.assemble_pool` asks it for reserved copies, capped BM25
mates and capped fillers, and closes each batch through it.
"""

from __future__ import annotations

import itertools

import numpy as np

from cclip_jax.curation import neighbours
from cclip_jax.curation.concepts import Corpus


def caption_identities(words: Corpus) -> np.ndarray:
    """int64 [P]: equal ids for captions with the same word-token row (exact duplicates).

    A dict over the rows' bytes: ~50 ms for 100k captions, once per pool.
    """
    raw, off = words.tokens.astype(np.int32).tobytes(), (words.offsets * 4).tolist()
    ids: dict[bytes, int] = {}
    return np.fromiter(
        (ids.setdefault(raw[a:b], len(ids)) for a, b in itertools.pairwise(off)),
        dtype=np.int64,
        count=len(words),
    )


class DuplicateCap:
    """Per-identity limits of one pool, and the copies of each identity in the open batch.

    Args:
      words: the pool's captions; cap: `max_duplicates` (>= 1); full: batches in the pool (>= 1);
      spare: captions the pool leaves over (P - full * B); order: int [P], the anchor order.
    """

    def __init__(self, words: Corpus, cap: int, full: int, spare: int, order: np.ndarray):
        self.ident = caption_identities(words)
        copies = np.bincount(self.ident)
        # Spread evenly: with a flat cap, a caption with more copies than `cap` per batch would
        # fill the pool's last batches alone. (Counting on the P mod B leftovers to take some
        # copies only moves the pile into the leftover pool: measured worse on the demo world.)
        self.limit = np.maximum(cap, -(-copies // full))
        self.risky = (copies > self.limit)[self.ident]  # bool [P]: rows a limit may refuse
        self.heavy = np.flatnonzero(copies > self.limit)  # identities a limit may refuse
        self.left = copies  # copies not yet in a closed batch, per identity
        self.taken = np.zeros(len(copies), np.int64)  # copies in the open batch, per identity
        self.spare = spare  # captions the pool leaves over (P - full * B)
        # Rows of each identity in anchor order: identity i is by_ident[first[i]:first[i + 1]].
        pos = np.empty(len(order), np.int64)
        pos[order] = np.arange(len(order))
        self.by_ident = np.lexsort((pos, self.ident))
        self.first = np.searchsorted(self.ident[self.by_ident], np.arange(len(copies) + 1))

    def reserve(self, free: np.ndarray, later: int, room: int) -> np.ndarray:
        """Copies the open batch must take now so that the `later` batches can still place the
        rest within the limits (all but `spare`): without them, BM25 leaves the copies of
        captions that no other anchor ranks high to pile into the pool's last batches.

        Args:
          free: float32 [P], 1 = unused; later: batches after this one; room: free slots.

        Returns:
          int64 [<= room] rows: most excess first, then in anchor order.
        """
        h = self.heavy
        excess = self.left[h] - self.taken[h] - self.limit[h] * later
        due = int(np.maximum(excess, 0).sum()) - self.spare
        if due <= 0 or room <= 0:
            return np.zeros(0, np.int64)
        pick = np.flatnonzero(excess > 0)
        pick = pick[np.lexsort((h[pick], -excess[pick]))]  # most excess first, ties by id
        want = np.minimum(excess[pick], self.limit[h[pick]] - self.taken[h[pick]])
        want = np.minimum(want, np.maximum(min(due, room) - (np.cumsum(want) - want), 0))
        out = []
        for i, w in zip(h[pick].tolist(), want.tolist(), strict=True):
            if w:
                rows = self.by_ident[self.first[i] : self.first[i + 1]]
                out.append(rows[free[rows] > 0][:w])  # its first free copies
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def levels(self, rows: np.ndarray) -> np.ndarray:
        """int64 [n]: for candidates in priority order, copies of the row's identity ahead of it
        (in the batch, or earlier in `rows`) minus its limit; < 0 means it may join."""
        ids = self.ident[rows]
        order = np.argsort(ids, kind="stable")
        s = ids[order]
        starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
        rank = np.empty(len(rows), np.int64)
        rank[order] = np.arange(len(rows)) - np.repeat(starts, np.diff(np.append(starts, len(s))))
        return self.taken[ids] + rank - self.limit[ids]

    def mates(
        self, index: neighbours.PoolIndex, query: np.ndarray, k: int, free: np.ndarray
    ) -> tuple[np.ndarray, int]:
        """The k best BM25 mates under the limits (fewer when the ranking runs out), and how
        many ranked candidates were passed over before the last one taken."""
        if k <= 0 or len(query) == 0:
            return np.zeros(0, np.int64), 0
        scores = index.scores(query, free)
        top = neighbours.best(scores, k)  # = index.top(query, k, free)
        if not self.risky[top].any():
            return top, 0  # the fast path: no candidate can hit a limit
        ok = self.levels(top) < 0
        ranked, depth = top, k
        # The top k lost some: walk further down the ranking (8x deeper each time; a deeper
        # ranking starts with the shallower one, so nothing is reordered).
        while ok.sum() < k and len(ranked) == depth:
            depth *= 8
            ranked = neighbours.best(scores, depth)
            ok = self.levels(ranked) < 0
        take = np.flatnonzero(ok)[:k]
        end = take[-1] + 1 if len(take) == k else len(ranked)
        return ranked[take], int((~ok[:end]).sum())

    def fill(self, cand: np.ndarray, need: int) -> tuple[np.ndarray, int]:
        """`need` (>= 1) fillers from candidates in anchor order (at least `need` of them):
        those under their limit first; if too few, the rest with the fewest copies in the batch
        first. Also returns how many candidates were passed over."""
        lv = self.levels(cand)
        ok = np.flatnonzero(lv < 0)
        if len(ok) >= need:
            return cand[ok[:need]], int(ok[need - 1] + 1 - need)
        rest = np.flatnonzero(lv >= 0)
        rest = rest[np.lexsort((rest, lv[rest]))][: need - len(ok)]
        return cand[np.concatenate([ok, rest])], int(len(cand) - len(ok))

    def close(self, rows: np.ndarray, cap: int) -> int:
        """Closes the open batch; returns its members beyond `cap` copies of their caption."""
        ids = np.sort(self.ident[rows])
        starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
        counts = np.diff(np.append(starts, len(ids)))
        np.subtract.at(self.left, ids, 1)
        self.taken[ids] = 0
        return int(np.maximum(counts - cap, 0).sum())
