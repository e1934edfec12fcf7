"""Greedy batch assembly inside one pool, with each batch's concepts and labels.

Per pool (members in ordinal order): index the captions with BM25; visit anchors in a seeded
random order; each unused anchor opens a batch and takes its B - 1 best-scoring unused
neighbours (fewer when BM25 finds fewer with a positive score: the rest are filled from the
anchor order and counted as `filler`). Every caption is used at most once; the pool's last
`P mod B` captions are returned as leftovers, which the runners gather into one final pool,
whose own remainder (< B) is dropped and counted in the manifest.

Duplicate cap (`max_duplicates`, 0 = off): exact duplicates of the anchor (the same normalised
word tokens) always score highest in BM25, so on a corpus of many identical short captions a
batch could be B copies of one caption: no concept separates its rows, and the plain term sees
B - 1 false negatives per row. So a batch takes at most `max_duplicates` members of one caption
identity (the anchor counts): mates are BM25 best first, passing over members whose identity is
at its limit (walking further down the ranking only when the top B - 1 lose some), fillers are
taken in anchor order under the same limit. A caption with more copies in the pool than
`max_duplicates` per batch can place gets the least limit that places them,
`ceil(copies / batches)`, and each batch first reserves the copies that the later batches could
no longer place within the limits; otherwise the copies that no anchor ranks high pile into the
pool's last batches (on the demo world: 93,966 duplicate pairs in batches with no cap, 15,906
with a flat cap, 8,966 with spread limits; worst batch 64, 43, 18 copies). If a batch still
cannot be filled under the limits, it takes the members with the fewest copies in the batch
first; no batch is ever short. Per batch, `duplicates_skipped` counts candidates passed over
because of a limit (mates ranked above the last one taken, fillers before the last one taken),
`duplicates_over_cap` the members beyond `max_duplicates` copies of their caption, and reserved
copies count as `filler`.

The batch's concepts are its n-grams shared by at least `min_batch_count` members, most shared
first, plus masked captions of the anchor with its best neighbours; see `labels.py`.
`concept_kinds` (default `all`) keeps only one kind of them (`kinds.py`); it acts here, after
the members are chosen, so every kind curates the same batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import sparse

from cclip_jax.curation import concepts as concepts_lib
from cclip_jax.curation import duplicates, kinds, masked, neighbours
from cclip_jax.curation import labels as labels_lib
from cclip_jax.curation.concepts import Corpus

# Pool id of the final pool of leftovers: sorts after every real pool, in both runners.
LEFTOVER_POOL = (2**31 - 1, 0)


@dataclasses.dataclass(frozen=True)
class AssemblyOptions:
    """Batch-assembly settings (a picklable value taken from the config)."""

    batch_size: int = 256
    max_concepts: int = 64
    max_masked: int = 8
    max_present: int = 8
    min_batch_count: int = 2
    label_rule: str = "attribute"
    max_duplicates: int = 2  # 0 = no cap
    concept_kinds: str = "all"  # all | unigram | attribute_noun | masked (see kinds.py)
    seed: int = 0

    @classmethod
    def from_config(cls, config) -> AssemblyOptions:
        return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class PoolData:
    """One pool's members, in ordinal order.

    Attributes:
      words: the members' tokens (pool-local sorted vocabulary).
      concepts: the members' concept ids (vocab = the pool's concept strings, sorted).
      members: int64 [P], the caller's ids of the members (global rows or list positions).
    """

    words: Corpus
    concepts: Corpus
    members: np.ndarray

    def __len__(self) -> int:
        return len(self.members)

    @classmethod
    def from_strings(
        cls, members: np.ndarray, token_lists: list[list[str]], concept_lists: list[list[str]]
    ) -> PoolData:
        """Builds a pool from strings (the Beam runner's path)."""
        return cls(
            concepts_lib.encode(token_lists),
            concepts_lib.encode([sorted(c) for c in concept_lists]),
            members,
        )

    @classmethod
    def from_global(cls, members: np.ndarray, words: Corpus, concept_rows: Corpus) -> PoolData:
        """Builds a pool from corpus-wide arrays (the local runner's path); equal to
        `from_strings` on the same members because both vocabularies are sorted."""
        return cls(
            concepts_lib.subset(words, members), concepts_lib.subset(concept_rows, members), members
        )


@dataclasses.dataclass
class Batch:
    """One assembled batch.

    Attributes:
      members: int64 [B], the caller's ids (`PoolData.members`) of the batch's captions.
      concepts: K concept strings (K <= max_concepts; the writer pads).
      labels: int8 [B, max_concepts].
      stats: per-batch counts (sharing, filler, capped, masked, duplicates_skipped,
        duplicates_over_cap).
    """

    members: np.ndarray
    concepts: list[str]
    labels: np.ndarray
    stats: dict[str, float]


def mean_sharing(rows: list[np.ndarray]) -> float:
    """Mean over captions of how many other captions share at least one concept with it.

    Args:
      rows: B arrays of concept ids (any id space shared by the rows).

    Returns:
      The mean, in [0, B - 1].
    """
    if not rows:
        return 0.0
    lengths = [len(r) for r in rows]
    cols = np.concatenate(rows) if sum(lengths) else np.zeros(0, np.int64)
    distinct, _ = _count(cols)
    cols = np.searchsorted(distinct, cols)
    ptr = np.concatenate([[0], np.cumsum(lengths)])
    m = sparse.csr_matrix(
        (np.ones(len(cols), np.float32), cols, ptr),
        shape=(len(rows), int(cols.max(initial=-1)) + 1),
    )
    share = (m @ m.T).tocsr()
    share.data = (share.data > 0).astype(np.float32)
    per_row = np.asarray(share.sum(axis=1)).ravel() - (np.array(lengths) > 0)
    return float(per_row.mean())


def _count(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and their counts (sort-based: np.unique costs ~0.5 ms per call
    even on tiny arrays, and this runs several times per batch)."""
    if len(values) == 0:
        return values, np.zeros(0, np.int64)
    v = np.sort(values)
    starts = np.flatnonzero(np.concatenate([[True], v[1:] != v[:-1]]))
    return v[starts], np.diff(np.append(starts, len(v)))


def _batch(
    pool: PoolData,
    rows: np.ndarray,
    anchor_pairs: list[tuple[int, int]],
    weight: np.ndarray,
    per_pool: tuple[Any, ...],
    opts: AssemblyOptions,
    with_sharing: bool,
    kind_keep: np.ndarray | None = None,
) -> Batch:
    cids = [pool.concepts.row(r) for r in rows.tolist()]
    flat = np.concatenate(cids) if cids else np.zeros(0, np.int32)
    ids, counts = _count(flat)
    shared = counts >= opts.min_batch_count
    if kind_keep is not None:  # concept_kinds: only n-grams of the kept kind (none: `masked`)
        shared &= kind_keep[ids]
    ids, counts = ids[shared], counts[shared]

    patterns, seen = [], set()
    max_masked = opts.max_masked if kinds.keeps_masked(opts.concept_kinds) else 0
    for a, b in anchor_pairs:
        if len(patterns) >= max_masked:
            break
        pat = masked.masked_pattern(pool.words.row(a), pool.words.row(b), weight)
        s = masked.pattern_string(pat, pool.words.vocab)
        # A pattern without a gap is a whole caption repeated, not shared structure.
        if s not in seen and masked.GAP in pat and masked.has_content(pat, pool.words.vocab):
            seen.add(s)
            patterns.append((s, pat))

    n_ngram = min(len(ids), opts.max_concepts - len(patterns))
    top = np.lexsort((ids, -counts))[:n_ngram]  # most shared first, ties by string order
    ngram_ids = ids[top]
    names = [pool.concepts.vocab[i] for i in ngram_ids.tolist()] + [s for s, _ in patterns]
    k = len(names)
    present = np.zeros((len(rows), k), dtype=bool)
    column = np.full(len(pool.concepts.vocab), -1, dtype=np.int64)
    column[ngram_ids] = np.arange(n_ngram)
    row_of = np.repeat(np.arange(len(rows)), [len(c) for c in cids])
    col = column[flat] if flat.size else flat.astype(np.int64)
    present[row_of[col >= 0], col[col >= 0]] = True
    for j, (_, pat) in enumerate(patterns):
        present[:, n_ngram + j] = masked.match_rows(
            pat, pool.words.tokens, pool.words.offsets, rows
        )
    view = labels_lib.batch_view(pool.words, rows, names, present, *per_pool)
    lab, counts_ = labels_lib.label_matrix(
        view, opts.label_rule, opts.max_present, opts.max_concepts
    )
    stats = {"num_concepts": k, "num_masked": len(patterns), **counts_}
    if with_sharing:
        stats["sharing"] = mean_sharing(cids)
    return Batch(pool.members[rows], names, lab, stats)


def assemble_pool(
    pool: PoolData, pool_id: tuple[int, int], opts: AssemblyOptions
) -> tuple[list[Batch], np.ndarray]:
    """Greedy BM25 batches of one pool (see the module docstring).

    Args:
      pool: the pool's members.
      pool_id: the pool's `(pool, chunk)` index (seeds the anchor order).
      opts: assembly options.

    Returns:
      The batches, in assembly order, and the leftover members (int64, ordinal order).
    """
    size, bsz = len(pool), opts.batch_size
    full = size // bsz
    if full == 0:
        return [], pool.members.copy()
    index = neighbours.PoolIndex(pool.words)
    weight = neighbours.idf(pool.words)
    per_pool = (
        labels_lib.attribute_triples(pool.words),
        {t: i for i, t in enumerate(pool.words.vocab)},
    )
    kind_keep = kinds.ngram_mask(pool.concepts.vocab, opts.concept_kinds)
    cap = opts.max_duplicates
    # Sharing costs ~ms per batch: measure it on about 32 evenly spaced batches per pool.
    stride = max(1, full // 32)
    order = np.random.default_rng([opts.seed, *pool_id]).permutation(size)
    dup = duplicates.DuplicateCap(pool.words, cap, full, size - full * bsz, order) if cap else None
    free = np.ones(size, dtype=np.float32)
    cursor = 0
    out = []
    for j in range(full):
        while free[order[cursor]] == 0:
            cursor += 1
        anchor = int(order[cursor])
        free[anchor] = 0
        query = pool.words.row(anchor)
        skipped = 0
        if dup is None:
            due = np.zeros(0, np.int64)
            mates = index.top(query, bsz - 1, free)
        else:
            dup.taken[dup.ident[anchor]] += 1
            due = dup.reserve(free, full - j - 1, bsz - 1)
            free[due] = 0
            np.add.at(dup.taken, dup.ident[due], 1)
            mates, skipped = dup.mates(index, query, bsz - 1 - len(due), free)
            np.add.at(dup.taken, dup.ident[mates], 1)
        free[mates] = 0
        need = bsz - 1 - len(due) - len(mates)
        if need:
            # Every row before the cursor is used; `full` batches of B always fit in the pool.
            cand = order[cursor:]
            cand = cand[free[cand] > 0]
            if dup is None:
                fill = cand[:need]
            else:
                fill, n = dup.fill(cand, need)
                skipped += n
            free[fill] = 0
        else:
            fill = np.zeros(0, np.int64)
        rows = np.concatenate([[anchor], due, mates, fill]).astype(np.int64)
        pairs = [(anchor, int(m)) for m in mates[: 2 * opts.max_masked].tolist()]
        batch = _batch(pool, rows, pairs, weight, per_pool, opts, j % stride == 0, kind_keep)
        batch.stats["filler"] = need + len(due)
        batch.stats["duplicates_skipped"] = skipped
        batch.stats["duplicates_over_cap"] = dup.close(rows, cap) if dup else 0
        out.append(batch)
    return out, pool.members[np.flatnonzero(free)]


def random_order_key(ordinal: tuple[int, int], seed: int) -> int:
    """Sort key that defines the random baseline batches (same in both runners)."""
    return neighbours.stable_hash(f"{ordinal[0]}:{ordinal[1]}", seed + 1)


def random_sample_size(batch_size: int) -> int:
    """How many captions form the random baseline batches (64 batches of B): those with the
    smallest `random_order_key`, in both runners."""
    return 64 * batch_size


def random_sharing(concept_rows: list[np.ndarray], batch_size: int) -> float:
    """Mean sharing of random batches: the baseline the curated batches are compared with.

    Args:
      concept_rows: concept id arrays of the (at most `random_sample_size(batch_size)`) captions
        with the smallest `random_order_key`, in that order (consecutive chunks of
        `batch_size` are the random batches).
      batch_size: B.

    Returns:
      Mean number of batch-mates sharing a concept, over the random batches.
    """
    chunks = [concept_rows[s : s + batch_size] for s in range(0, len(concept_rows), batch_size)]
    full = [c for c in chunks if len(c) == batch_size] or chunks[:1]
    return float(np.mean([mean_sharing(c) for c in full])) if full else 0.0
