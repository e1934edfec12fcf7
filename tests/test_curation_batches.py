"""Curation from labelled captions to batches: routing captions to pools (MinHash keys,
copies spread over pools), the BM25 pool index, the duplicate cap of batch assembly, and
batch stats."""

import dataclasses
import itertools
import json
from collections import Counter

import bm25s
import ml_collections
import numpy as np
import pytest
from curation_inputs import encode_captions, sugarcrepe_captions

from cclip_jax.curation import (
    batches,
    concepts,
    duplicates,
    neighbours,
    settings,
    stats,
    text,
)


def test_routing_puts_shared_concepts_together_and_is_stable():
    def key(concept_lists, captions, seed):
        rows = concepts.encode(concept_lists)
        return neighbours.route_keys(rows.vocab, rows, captions, seed).tolist()

    h = {c: neighbours.stable_hash(c, 0) for c in ("red square", "blue")}
    # The least concept hash, whatever the order of concepts and the caption's text.
    assert (
        key([["red square", "blue"], ["blue", "red square"]], ["x", "y"], 0)
        == [min(h.values())] * 2
    )
    assert key([["blue", "red square"]], ["y"], 1) != [min(h.values())]
    rows = concepts.Corpus(
        ["a", "b", "c"], np.array([0, 1, 1, 2], np.int32), np.array([0, 2, 3, 4, 4])
    )
    keys = neighbours.route_keys(["a", "b", "c"], rows, ["p", "q", "r", "empty"], 0)
    assert keys.tolist()[:3] == key([["a", "b"], ["b"], ["c"]], ["p", "q", "r"], 0)
    # A caption without concepts goes by a hash of its (normalised) text.
    assert keys[3] == key([[]], ["empty"], 0)[0] == neighbours.stable_hash("\x00empty", 0)
    chunks = neighbours.split_pool(4, np.array([5, 1, 5, 1, 9, 9, 9, 1]), pool_size=3)
    assert [c for c, _ in chunks] == [(4, 0), (4, 1), (4, 2)]
    assert sorted(np.concatenate([r for _, r in chunks]).tolist()) == list(range(8))
    assert neighbours.split_pool(4, np.arange(6), pool_size=3)[0][0] == (4, 0)


def test_pool_index_scores_equal_bm25s_retrieve():
    corpus = encode_captions(sugarcrepe_captions(800))
    index = neighbours.PoolIndex(corpus)
    allowed = np.ones(len(corpus), np.float32)
    allowed[[1, 5]] = 0
    ref = bm25s.BM25(method="lucene")
    ref.index([corpus.row(i).tolist() for i in range(len(corpus))], show_progress=False)
    for q in (0, 10, 400):
        query = np.unique(corpus.row(q))
        want = ref.get_scores(query.tolist()) * allowed
        np.testing.assert_allclose(index.scores(query, allowed), want, rtol=1e-5)
        top = index.top(query, 10, allowed)
        np.testing.assert_allclose(np.sort(want)[::-1][:10], want[top], rtol=1e-5)
        assert 1 not in top and 5 not in top


def _pool(captions):
    toks = [text.words(c) for c in captions]
    return batches.PoolData.from_strings(
        np.arange(len(captions)), toks, concepts.caption_ngrams(toks, 2)
    )


def _copies(members, captions):
    """The most copies of one normalised caption among `members`."""
    return max(Counter(text.normalize(captions[i]) for i in members.tolist()).values())


def _check_partition(out, left, n, bsz):
    used = np.concatenate([b.members for b in out] + [left])
    assert sorted(used.tolist()) == list(range(n))  # every member once: in a batch or left over
    assert all(len(b.members) == bsz for b in out) and len(left) < bsz


# Five short captions with 12 copies each (the synthetic world's "a star"), 40 varied ones, and
# 4 with words nobody else has (no positive BM25 score: they become fillers).
_DUPS = ["a star", "a red square", "a circle", "a large blue star", "a green triangle"]
_DUP_CAPTIONS = (
    [c for c in _DUPS for _ in range(12)]
    + [
        f"a {c} {s} {r} a {s2}"
        for c, s, r, s2 in itertools.islice(
            itertools.product(
                ["red", "blue", "small", "big"],
                ["square", "circle"],
                ["left of", "above"],
                ["star", "cross", "ring"],
            ),
            40,
        )
    ]
    + ["zebra", "xylophone", "quokka", "yurt"]
)


def test_duplicate_cap_limits_copies_per_batch():
    caps = _DUP_CAPTIONS
    opts = batches.AssemblyOptions(batch_size=8, max_concepts=16, max_masked=4, max_duplicates=2)
    out, left = batches.assemble_pool(_pool(caps), (0, 0), opts)
    assert len(out) == len(caps) // 8
    _check_partition(out, left, len(caps), 8)
    # 12 copies fit 2 per batch in 13 batches: the cap holds everywhere.
    assert max(_copies(b.members, caps) for b in out) == 2
    assert sum(b.stats["duplicates_over_cap"] for b in out) == 0
    assert sum(b.stats["duplicates_skipped"] for b in out) > 0
    # Without the cap, BM25 fills an anchor's batch with its copies first.
    no_cap = dataclasses.replace(opts, max_duplicates=0)
    out0, _ = batches.assemble_pool(_pool(caps), (0, 0), no_cap)
    assert max(_copies(b.members, caps) for b in out0) == 8
    assert all(b.stats["duplicates_skipped"] == b.stats["duplicates_over_cap"] == 0 for b in out0)


def _greedy_before_cap(pool, pool_id, opts):
    """Batch members as `assemble_pool` chose them before the duplicate cap existed."""
    index = neighbours.PoolIndex(pool.words)
    bsz = opts.batch_size
    order = np.random.default_rng([opts.seed, *pool_id]).permutation(len(pool))
    free = np.ones(len(pool), np.float32)
    cursor, out = 0, []
    for _ in range(len(pool) // bsz):
        while not free[order[cursor]]:
            cursor += 1
        anchor = order[cursor]
        free[anchor] = 0
        mates = index.top(pool.words.row(anchor), bsz - 1, free)
        free[mates] = 0
        fill = [r for r in order[cursor:].tolist() if free[r]][: bsz - 1 - len(mates)]
        free[fill] = 0
        out.append([int(anchor), *mates.tolist(), *fill])
    return out


@pytest.mark.parametrize("seed", [0, 3])
def test_max_duplicates_zero_is_the_uncapped_assembly(seed):
    opts = batches.AssemblyOptions(
        batch_size=8, max_concepts=16, max_masked=4, max_duplicates=0, seed=seed
    )
    pool = _pool(_DUP_CAPTIONS)
    out, _ = batches.assemble_pool(pool, (1, 0), opts)
    want = _greedy_before_cap(pool, (1, 0), opts)
    assert [b.members.tolist() for b in out] == want
    assert sum(b.stats["filler"] for b in out) > 0  # the filler path is compared too
    # Without duplicates in the pool, the cap never binds: the same batches as no cap.
    unique = _pool(sorted(set(_DUP_CAPTIONS)))
    capped, _ = batches.assemble_pool(unique, (1, 0), dataclasses.replace(opts, max_duplicates=2))
    assert [b.members.tolist() for b in capped] == _greedy_before_cap(unique, (1, 0), opts)


def test_duplicate_cap_over_cap_fallback():
    opts = batches.AssemblyOptions(batch_size=8, max_concepts=16, max_masked=4, max_duplicates=2)
    # Only duplicates: 20 copies in 2 batches; each batch still full, 6 members over the cap.
    caps = ["a star"] * 20
    out, left = batches.assemble_pool(_pool(caps), (0, 0), opts)
    _check_partition(out, left, 20, 8)
    assert [b.stats["duplicates_over_cap"] for b in out] == [6, 6]
    # Random pools of few captions, many copies, and captions sharing no word (fillers): under
    # any anchor order, batches are full, members used once, the excess counted exactly.
    rng = np.random.default_rng(0)
    words = ["a star", "a circle", "a red star", "zebra", "xylophone", "quokka", "yurt"]
    for seed in range(12):
        caps = rng.choice(
            words, size=int(rng.integers(17, 40)), p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05]
        )
        out, left = batches.assemble_pool(
            _pool(caps.tolist()), (0, 0), dataclasses.replace(opts, seed=seed)
        )
        _check_partition(out, left, len(caps), 8)
        for b in out:
            n = Counter(caps[b.members].tolist()).values()
            assert b.stats["duplicates_over_cap"] == sum(max(c - 2, 0) for c in n)
    # The last resort: every candidate filler is at its limit; the batch still fills, with the
    # captions that have the fewest copies in it first.
    pool = _pool(["a star"] * 6 + ["a circle"] * 6)
    dup = duplicates.DuplicateCap(pool.words, 2, 2, 0, np.arange(12))
    dup.taken[dup.ident[[0, 6]]] = [2, 1]  # the open batch: 2 stars (0, 1), 1 circle (6)
    assert dup.limit.tolist() == [3, 3]
    fill, passed = dup.fill(np.array([2, 3, 4, 5, 7, 8, 9, 10, 11]), 5)
    assert fill.tolist() == [2, 7, 8, 3, 9]  # under the limit (1 star, 2 circles), then fewest
    assert passed == 9 - 3


def test_batch_stats_round_trip_and_merge():
    opts = batches.AssemblyOptions(batch_size=8, max_concepts=16, max_masked=4, max_duplicates=2)
    out, _ = batches.assemble_pool(_pool(_DUP_CAPTIONS + ["a star"] * 20), (0, 0), opts)
    a, b = stats.BatchStats(), stats.BatchStats()
    for i, batch in enumerate(out):
        (a if i % 2 else b).add(batch)
    assert a.duplicates_skipped + b.duplicates_skipped > 0
    assert a.duplicates_over_cap + b.duplicates_over_cap > 0
    back = stats.BatchStats.from_raw(json.loads(json.dumps(a.raw())))
    assert back == a
    merged = a.merge(b).to_dict()
    assert merged["duplicates_skipped"] == sum(x.stats["duplicates_skipped"] for x in out)
    assert merged["duplicates_over_cap"] == sum(x.stats["duplicates_over_cap"] for x in out)
    assert merged["batches"] == len(out)


def test_caption_identities_and_max_duplicates_setting():
    corpus = encode_captions(["a star", "A  Star", "a star a", "a red star", "a star"])
    assert duplicates.caption_identities(corpus).tolist() == [0, 0, 1, 2, 0]
    c = settings.default_config()
    assert c.max_duplicates == 2
    settings.validate(c)
    for bad in (-1, 1.5, True):
        d = c.to_dict()
        d["max_duplicates"] = bad  # a fresh ConfigDict: an override would refuse the type
        with pytest.raises(ValueError, match=r"config\.max_duplicates"):
            settings.validate(ml_collections.ConfigDict(d))


def test_copies_beyond_a_pools_budget_are_spread_over_consecutive_pools():
    """Every copy of a caption has the same concepts, so MinHash routes them to one pool; past
    what that pool's batches can cap (`copy_budget`), each group of copies gets its own pool."""
    assert neighbours.copy_budget(1024, 64, 2) == 32 and neighbours.copy_budget(1024, 64, 0) == 0
    captions = ["a star"] * 10 + ["a red cube"] * 3
    keys = np.arange(13, dtype=np.int64) * 0 + 7  # one MinHash key for all
    out = neighbours.spread_copies(keys, captions, budget=4, seed=0)
    assert (out[:4] == 7).all() and (out[10:] == 7).all()  # within the budget: unchanged
    groups = out[4:10]  # copies 4-7 are group 1, copies 8-9 group 2
    assert len(set(groups[:4].tolist())) == 1 and len(set(groups[4:].tolist())) == 1
    assert groups[4] == groups[0] + 1  # consecutive keys: consecutive pools
    pools = 5
    assert len({int(neighbours.pool_of(k, pools)) for k in (groups[0], groups[4])}) == 2
    np.testing.assert_array_equal(neighbours.spread_copies(keys, captions, 0, 0), keys)
    # The per-copy rule that the Beam runner applies to each caption's group of copies.
    assert out.tolist() == [
        neighbours.spread_key(7, c, j if i < 10 else i - 10, 4, 0)
        for i, (j, c) in enumerate(zip(range(13), captions, strict=True))
    ]
    empty = neighbours.spread_copies(np.zeros(0, np.int64), [], 4, 0)
    assert empty.dtype == np.int64 and empty.shape == (0,)
