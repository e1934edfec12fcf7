"""Neighbour search: routing captions into pools, and exact BM25 (bm25s) inside a pool.

Exact global BM25 does not scale (a self-join of 1M captions takes ~16 minutes on 2 cores and
per-query cost grows with the corpus), so captions are first routed into pools of about
`pool_size` by MinHash over their concept sets: a caption goes to the pool of its minimum
concept hash, so two captions land together with probability at least their concepts' Jaccard
similarity, far above random pools. BM25 then runs exactly inside each pool.

Nothing here knows about runners: the local runner and the Beam runner call the same functions
on the same pool contents.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np

from cclip_jax.curation.concepts import Corpus

_MASK64 = (1 << 63) - 1  # keep hashes in int64 range so numpy and Python agree


def stable_hash(value: str, seed: int) -> int:
    """A 63-bit hash of a string that is the same in every process and on every machine."""
    digest = hashlib.blake2b(
        value.encode("utf-8"), digest_size=8, salt=seed.to_bytes(8, "little")
    ).digest()
    return int.from_bytes(digest, "little") & _MASK64


def route_keys(
    concept_strings: list[str], rows: Corpus, captions: list[str], seed: int
) -> np.ndarray:
    """The MinHash routing keys of captions (int64 [N]); `pool_of(key, num_pools)` is a
    caption's pool.

    A caption's key is the least hash of its concepts; a caption without concepts goes to a
    pseudo-random pool by a hash of its text.

    Args:
      concept_strings: C concept strings (any order, no repeats).
      rows: concept ids (into `concept_strings`) per caption, N rows.
      captions: the N normalised captions.
      seed: curation seed.
    """
    h = np.fromiter(
        (stable_hash(c, seed) for c in concept_strings), dtype=np.int64, count=len(concept_strings)
    )
    lengths = np.diff(rows.offsets)
    keys = np.empty(len(lengths), dtype=np.int64)
    has = lengths > 0
    if rows.tokens.size:
        mins = np.minimum.reduceat(h[rows.tokens], rows.offsets[:-1][has])
        keys[has] = mins
    for i in np.flatnonzero(~has).tolist():
        keys[i] = stable_hash("\x00" + captions[i], seed)
    return keys


def copy_budget(pool_size: int, batch_size: int, max_duplicates: int) -> int:
    """How many copies of one caption a pool can take with every batch within the duplicate
    cap: (batches per pool) x `max_duplicates` (0 = no cap: no spreading)."""
    return max(1, pool_size // batch_size) * max_duplicates if max_duplicates else 0


def spread_key(key: int, caption: str, copy: int, budget: int, seed: int) -> int:
    """The routing key of the `copy`-th copy (0-based, in input order) of a normalised caption.

    Every copy of a caption has the same concepts, so MinHash sends them all to one pool, and a
    caption far more frequent than one pool's batches can cap fills them with copies (a natural
    world has 3,294 copies of "a star" in 100k pairs). So the first `budget` copies keep `key`
    and group g >= 1 of `budget` further copies gets the key h + g, h a hash of the caption:
    consecutive keys are consecutive pools (`pool_of`), so no two groups of one caption share
    a pool until there are more groups than pools.
    """
    if not budget or copy < budget:
        return key
    return (stable_hash("\x01" + caption, seed) + copy // budget) & _MASK64


def spread_copies(keys: np.ndarray, captions: list[str], budget: int, seed: int) -> np.ndarray:
    """`spread_key` for every caption (int64 [N]); `captions` normalised, in input order."""
    seen: dict[str, int] = {}
    out = []
    for key, caption in zip(keys.tolist(), captions, strict=True):
        copy = seen.get(caption, 0)
        seen[caption] = copy + 1
        out.append(spread_key(key, caption, copy, budget, seed))
    return np.array(out, dtype=np.int64)


def num_pools(num_captions: int, pool_size: int) -> int:
    """How many pools N captions are routed into (at least one)."""
    return max(1, -(-num_captions // pool_size))


def pool_of(key: int | np.ndarray, pools: int) -> int | np.ndarray:
    """The pool index of a routing key."""
    return key % pools


def split_pool(
    pool: int, keys: np.ndarray, pool_size: int
) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Splits an oversized pool (one very common minimum concept) into contiguous chunks.

    Args:
      pool: the pool's index.
      keys: int64 [P] routing keys of the pool's members, in ordinal order.
      pool_size: target pool size.

    Returns:
      `((pool, chunk), rows)` per chunk, rows int64 indices into `keys` in ordinal order; one
      chunk holding everything when P <= 2 * pool_size.
    """
    n = len(keys)
    if n <= 2 * pool_size:
        return [((pool, 0), np.arange(n))]
    order = np.argsort(keys, kind="stable")  # members with equal keys stay together
    return [
        ((pool, c), np.sort(rows))
        for c, rows in enumerate(np.array_split(order, -(-n // pool_size)))
    ]


@numba.njit(cache=True)
def _scores(
    query: np.ndarray,
    data: np.ndarray,
    indices: np.ndarray,
    indptr: np.ndarray,
    allowed: np.ndarray,
) -> np.ndarray:
    scores = np.zeros(len(allowed), dtype=np.float32)
    for t in query:
        for j in range(indptr[t], indptr[t + 1]):
            scores[indices[j]] += data[j]
    return scores * allowed


class PoolIndex:
    """Exact BM25 over one pool's captions.

    bm25s builds the index (the eager sparse matrix of per-token BM25 scores); queries are
    summed over its postings by a cached numba kernel. bm25s' own numba retrieval gives the
    same scores but compiles for ~18 s in every fresh process, which dominates small pools.

    Args:
      corpus: the pool's captions as token ids (pool-local vocabulary).
    """

    def __init__(self, corpus: Corpus):
        # Imported here: bm25s imports JAX when installed, which the local runner's parent
        # process should not have started before it forks its workers.
        import bm25s

        self._size = len(corpus)
        bm25 = bm25s.BM25(method="lucene")
        docs = [corpus.row(i).tolist() for i in range(len(corpus))]
        # bm25s infers "token ids" from the first document; give empty ones a harmless id.
        bm25.index([d or [0] for d in docs], show_progress=False)
        if bm25.nonoccurrence_array is not None:
            raise ValueError("BM25 variants with non-occurrence scores are not supported")
        # Token-id corpora keep their ids (bm25s' vocab is the identity map), so a query's
        # ids index the postings directly.
        self._data = bm25.scores["data"].astype(np.float32)
        self._indices = bm25.scores["indices"].astype(np.int64)
        self._indptr = bm25.scores["indptr"].astype(np.int64)

    def scores(self, query: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """float32 [P] BM25 score of every caption for a query (0 where not allowed)."""
        q = np.sort(np.asarray(query, dtype=np.int64))
        # Distinct tokens, sort-based: np.unique costs ~0.5 ms even on 10 elements.
        q = q[np.concatenate([[True], q[1:] != q[:-1]])]
        return _scores(q, self._data, self._indices, self._indptr, allowed)

    def top(self, query: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
        """Best-scoring allowed captions for a query.

        Args:
          query: int [q] token ids.
          k: how many to return at most.
          allowed: float32 [P], 1 for captions that may be returned, 0 otherwise.

        Returns:
          int64 [<= k] pool rows with a positive score, best first (ties by row).
        """
        if k <= 0 or len(query) == 0:
            return np.zeros(0, dtype=np.int64)
        return best(self.scores(query, allowed), k)


def best(scores: np.ndarray, k: int) -> np.ndarray:
    """The (at most) k positive entries of `scores` (float [P]), best first, ties by row.

    Returns:
      int64 [<= k] rows; the first k' rows of `best(s, k)` equal `best(s, k')` for k' <= k.
    """
    cand = np.flatnonzero(scores > 0)
    if len(cand) > k:
        # Keep every caption tied with the k-th score so the tie-break below is by row.
        kth = np.partition(scores[cand], len(cand) - k)[len(cand) - k]
        cand = cand[scores[cand] >= kth]
    order = np.lexsort((cand, -scores[cand]))
    return cand[order][:k]


def idf(corpus: Corpus) -> np.ndarray:
    """float64 [V] BM25-style IDF of each token of a corpus (weights for masked captions)."""
    n = len(corpus)
    starts = np.repeat(np.arange(n), np.diff(corpus.offsets))
    pairs = np.unique(starts.astype(np.int64) * max(len(corpus.vocab), 1) + corpus.tokens)
    df = np.bincount(pairs % max(len(corpus.vocab), 1), minlength=len(corpus.vocab))
    return np.log1p((n - df + 0.5) / (df + 0.5))
