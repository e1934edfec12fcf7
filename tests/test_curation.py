"""Curation building blocks up to the labels: text normalisation, concept n-grams and their
document-frequency band, masked captions (weighted LCS), label rules and the present cap.
Routing and batch assembly are in test_curation_batches.py."""

import itertools
from collections import Counter

import numpy as np
import pytest
from curation_inputs import encode_captions, sugarcrepe_captions

from cclip_jax.curation import (
    concepts,
    labels,
    masked,
    text,
)


def _reference_ngrams(tokens, max_n):
    """The candidate rule written plainly, window by window: the reference that the vectorised
    `concepts.extract_concepts` is checked against."""
    out = set()
    for n in range(1, max_n + 1):
        for p in range(len(tokens) - n + 1):
            window = tokens[p : p + n]
            edge = window[0] in text.EDGE_WORDS or window[-1] in text.EDGE_WORDS
            if not edge and any(t not in text.STOP_WORDS for t in window):
                out.add(" ".join(window))
    return out


def test_normalize_and_tokenize():
    assert text.normalize("  A  Grey\tCAT’s  toy ") == "a grey cat's toy"
    assert text.tokenize("she's a left-handed writer.") == [
        "she's",
        "a",
        "left",
        "handed",
        "writer",
    ]


def test_concepts_band_and_stop_rules():
    caps = [
        "a red square left of a blue circle",
        "a red square",
        "a big red square",
        "the blue circle is left of a green square",
        "a unique hexagon of the night",
    ]
    c = concepts.extract_concepts(encode_captions(caps), max_n=4, min_df=2, max_df_frac=1.0)
    assert c.strings == [
        "blue",
        "blue circle",
        "circle",
        "left",
        "left of",
        "red",
        "red square",
        "square",
    ]
    assert c.df.tolist() == [2, 2, 2, 2, 2, 3, 3, 4]
    assert [c.strings[i] for i in c.row(1)] == ["red", "red square", "square"]
    assert len(c.row(4)) == 0  # rare words are never shared: no concepts
    # max_df band: "square" is in 4 of 5 captions; 0.6 * 5 = 3 removes it.
    c = concepts.extract_concepts(encode_captions(caps), max_n=4, min_df=2, max_df_frac=0.6)
    assert "square" not in c.strings and "red square" in c.strings


@pytest.mark.parametrize("max_n", [4, 6])  # 6: V^6 > 2^62, the densely re-indexed path
def test_vectorised_concepts_equal_per_caption_rule(max_n):
    caps = sugarcrepe_captions(3000)
    corpus = encode_captions(caps)
    got = concepts.extract_concepts(corpus, max_n=max_n, min_df=2, max_df_frac=0.05)
    toks = [text.words(c) for c in caps]
    per = [_reference_ngrams(t, max_n) for t in toks]
    df = Counter(g for s in per for g in s)
    hi = concepts.max_df(len(caps), 2, 0.05)
    kept = sorted(g for g, n in df.items() if 2 <= n <= hi)
    assert got.strings == kept
    assert got.df.tolist() == [df[g] for g in kept]
    for i in range(0, len(caps), 97):
        assert [got.strings[j] for j in got.row(i)] == sorted(set(kept) & per[i])
    # The Beam runner's path: every candidate of each caption, whatever the bundle.
    assert concepts.caption_ngrams(toks[:500], max_n) == [sorted(p) for p in per[:500]]
    assert concepts.caption_ngrams(toks[7:8], max_n) == [sorted(per[7])]


def test_caption_ngrams_of_captions_without_candidates_and_band():
    assert concepts.caption_ngrams([[], ["of", "the"], ["a", "red", "cat"]], 3) == [
        [],
        [],
        ["cat", "red", "red cat"],
    ]
    assert concepts.caption_ngrams([], 3) == []
    assert concepts.in_band(2, 10, 2, 0.3) and not concepts.in_band(4, 10, 2, 0.3)
    assert concepts.in_band(np.array([1, 2, 3, 4]), 10, 2, 0.3).tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert concepts.in_band(2, 1, 2, 0.3)  # the upper bound is never below min_df


def test_subset_equals_encode_of_rows():
    caps = sugarcrepe_captions(200)
    corpus = encode_captions(caps)
    rows = np.array([5, 17, 18, 150])
    sub = concepts.subset(corpus, rows)
    ref = encode_captions([caps[i] for i in rows])
    assert sub.vocab == ref.vocab
    np.testing.assert_array_equal(sub.tokens, ref.tokens)
    np.testing.assert_array_equal(sub.offsets, ref.offsets)


def _masked(a, b, stop_weight=0.1):
    c = encode_captions([a, b])
    w = np.array([stop_weight if t in text.STOP_WORDS else 2.0 for t in c.vocab])
    pat = masked.masked_pattern(c.row(0), c.row(1), w)
    return pat, c


@pytest.mark.parametrize(
    "a,b,want",
    [
        ("a car turning left", "she's a left-handed writer", "<M> a <M> left <M>"),
        (
            "a grey cat sitting in front of a black dog",
            "there is a grey wall in front of the black window",
            "<M> a grey <M> in front of <M> black <M>",
        ),
    ],
)
def test_masked_caption_proposal_examples(a, b, want):
    pat, c = _masked(a, b)
    assert masked.pattern_string(pat, c.vocab) == want
    assert masked.has_content(pat, c.vocab)
    assert masked.matches(pat, c.row(0)) and masked.matches(pat, c.row(1))


def test_idf_weights_prefer_content_words():
    # Unweighted, the LCS could keep "a ... a ... the" (3 tokens); IDF keeps "red square".
    a, b = "a red square on a mat by the door", "the red square"
    c = encode_captions([a, b])
    w = np.array([0.05 if t in text.STOP_WORDS else 3.0 for t in c.vocab])
    pairs = masked.align(c.row(0), c.row(1), w)
    assert [c.vocab[c.row(0)[i]] for i in pairs[:, 0]] == ["red", "square"]


def _brute_weighted_lcs(a, b, w):
    best = 0.0
    for r in range(len(a) + 1):
        for idx in itertools.combinations(range(len(a)), r):
            sub = [a[i] for i in idx]
            it = iter(b)
            if all(any(x == y for y in it) for x in sub):
                best = max(best, sum(w[x] for x in sub))
    return best


def test_weighted_lcs_is_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.integers(0, 4, size=rng.integers(1, 8))
        b = rng.integers(0, 4, size=rng.integers(1, 8))
        w = rng.uniform(0.1, 2.0, size=4)
        pairs = masked.align(a, b, w)
        assert np.all(a[pairs[:, 0]] == b[pairs[:, 1]])
        assert np.all(np.diff(pairs, axis=0) > 0)
        assert w[a[pairs[:, 0]]].sum() == pytest.approx(_brute_weighted_lcs(a, b, w))


def test_masked_match_semantics():
    c = encode_captions(["red square left of blue circle", "x"])
    v = {t: i for i, t in enumerate(c.vocab)}
    g = masked.GAP
    seq = c.row(0)
    assert masked.matches(np.array([g, v["red"], g, v["blue"], g]), seq)
    assert masked.matches(np.array([v["red"], v["square"], g]), seq)  # anchored at start
    assert not masked.matches(np.array([v["square"], g]), seq)
    assert masked.matches(np.array([g, v["blue"], v["circle"]]), seq)  # anchored at end
    assert not masked.matches(np.array([g, v["blue"], g, v["red"], g]), seq)  # order matters


def _view(rows, concept_names):
    c = encode_captions([*rows, " ".join(n.replace("<M>", "") for n in concept_names)])
    present = np.zeros((len(rows), len(concept_names)), dtype=bool)
    for b, r in enumerate(rows):
        for j, n in enumerate(concept_names):
            present[b, j] = "<M>" not in n and f" {n} " in f" {text.normalize(r)} "
    return labels.batch_view(c, np.arange(len(rows)), concept_names, present)


def test_label_rules():
    rows = ["a red car next to a tree", "a blue car on the road", "a big dog", "a red car"]
    names = ["red car", "car", "dog", "<M> car <M>"]
    view = _view(rows, names)
    lab, info = labels.label_matrix(view, "none", max_present=8, width=6)
    assert lab.dtype == np.int8 and lab.shape == (4, 6)
    assert lab[:, :4].tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]]
    assert not lab[:, 4:].any() and info["capped"] == 0
    lab, _ = labels.label_matrix(view, "complete", max_present=8, width=4)
    assert lab.tolist() == [[1, 1, -1, 0], [-1, 1, -1, 0], [-1, -1, 1, 0], [1, 1, -1, 0]]
    lab, _ = labels.label_matrix(view, "attribute", max_present=8, width=4)
    # Only "a blue car" contradicts "red car"; a dog says nothing about cars.
    assert lab.tolist() == [[1, 1, 0, 0], [-1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]]


def test_attribute_rule_sizes_and_no_false_contradiction():
    rows = [
        "a small red square",
        "a large square and a small circle",
        "a red circle",
        "a big blue and red square",
    ]
    view = _view(rows, ["small red square", "large square", "red square"])
    neg = labels.RULES["attribute"](view)
    assert neg.tolist() == [
        [False, True, False],
        [True, False, False],
        [False, False, False],
        [False, False, False],
    ]
    triples = labels.attribute_triples(encode_captions(["a big blue and red square"]))
    # "big blue" qualifies nothing ("and" is no content word); only red -> square.
    assert len(triples.cls) == 1


def test_present_cap_keeps_leftmost():
    present = np.array([[1, 1, 1, 0, 1], [0, 1, 0, 0, 0]], dtype=bool)
    capped, dropped = labels.cap_present(present, 2)
    assert capped.astype(int).tolist() == [[1, 1, 0, 0, 0], [0, 1, 0, 0, 0]]
    assert dropped == 2
