"""Metrics over score matrices: hand-built cases with ties (expected numbers worked out in the
comments), chance for all-tied scores, and a brute-force reference that averages over every
tie-breaking order of small integer matrices full of ties."""

import itertools

import numpy as np
import pytest

from cclip_jax.evaluation import metrics

# ---------------------------------------------------------------- brute-force reference


def _orders(row):
    """Every tie-breaking order of `row`, best first: sort by (score, tie-break rank)."""
    for tiebreak in itertools.permutations(range(len(row))):
        yield sorted(range(len(row)), key=lambda j: (row[j], tiebreak[j]), reverse=True)


def _brute_hits(row, correct, ks):
    hits = np.zeros(len(ks))
    orders = list(_orders(row))
    for order in orders:
        first = min(order.index(j) for j in np.flatnonzero(correct))
        hits += [first < k for k in ks]
    return hits / len(orders)


def _brute_precision(row, relevant, excluded, ks):
    cands = np.flatnonzero(~excluded)
    orders = list(_orders(row[cands]))
    out = np.zeros(len(ks))
    for order in orders:
        ranked = cands[order]
        out += [relevant[ranked[:k]].sum() / min(k, len(cands)) for k in ks]
    return out / len(orders)


def _brute_winoground(s):
    """Per item (text, image, group), averaged over the 24 orders of its 4 scores."""
    out = []
    for item in s:
        flat = item.reshape(4)  # c0i0, c0i1, c1i0, c1i1
        acc = np.zeros(3)
        orders = list(_orders(flat))
        for order in orders:
            pos = {j: order.index(j) for j in range(4)}  # lower = better
            text = pos[0] < pos[2] and pos[3] < pos[1]
            image = pos[0] < pos[1] and pos[3] < pos[2]
            acc += [text, image, text and image]
        out.append(acc / len(orders))
    return np.array(out)


# ------------------------------------------------------------------------------ pairs


def test_pair_accuracy_hand_built():
    # 1 (3 > 1), 0.5 (1 == 1), 0 (2 < 5), 0.5 (0 == 0): mean 2 / 4.
    assert metrics.pair_accuracy(np.array([3, 1, 2, 0]), np.array([1, 1, 5, 0])) == 0.5
    np.testing.assert_array_equal(metrics.pair_correct([2.0, 2.0], [1.0, 2.0]), [1.0, 0.5])
    assert metrics.pair_accuracy(np.zeros(7), np.zeros(7)) == 0.5  # blind: chance


# ------------------------------------------------------------------------- winoground


@pytest.mark.parametrize(
    "s, expected",
    [
        ([[1, 0], [0, 1]], (1, 1, 1)),
        # c0i0=2, c0i1=3, c1i0=1, c1i1=4: text 2>1 and 4>3; image fails (2 < 3).
        ([[2, 3], [1, 4]], (1, 0, 0)),
        # c0i0 ties c1i0 (=1), c1i1=2 > c0i1=0: text 0.5; image 1>0 and 2>1: 1; group 0.5.
        ([[1, 0], [1, 2]], (0.5, 1, 0.5)),
        # c0i0 = c0i1 = c1i1 = 1 > c1i0 = 0: text needs c1i1 > c0i1 (1/2), image c0i0 > c0i1
        # (1/2); group needs c0i1 last of the three tied: 1/3, not the product 1/4.
        ([[1, 1], [0, 1]], (0.5, 0.5, 1 / 3)),
        ([[5, 5], [5, 5]], (1 / 4, 1 / 4, 1 / 6)),  # blind: chance
    ],
)
def test_winoground_hand_built(s, expected):
    got = metrics.winoground_scores(np.array([s], float))
    np.testing.assert_allclose([got["text"], got["image"], got["group"]], expected)


def test_winoground_all_tied_is_chance():
    got = metrics.winoground_scores(np.full((10, 2, 2), 0.3))
    assert got == pytest.approx({"text": 0.25, "image": 0.25, "group": 1 / 6})


def test_winoground_brute_force():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 3, size=(200, 2, 2)).astype(float)
    per_item = metrics.winoground_correct(s)
    got = np.stack([per_item["text"], per_item["image"], per_item["group"]], axis=1)
    np.testing.assert_allclose(got, _brute_winoground(s))


# -------------------------------------------------------------------------- retrieval


def test_retrieval_recall_hand_built():
    sim = np.array([[0.5, 0.2, 0.5, 0.5], [0.9, 0.1, 0.3, 0.3]])
    txt_to_img = np.array([0, 0, 1, 1])
    got = metrics.retrieval_recall(sim, txt_to_img, ks=(1, 2, 3))
    # Image 0: best caption 0.5 (col 0) tied with 2 wrong ones (m=1, t=2, g=0):
    #   R@1 = 1/3, R@2 = 1 - (2/3)(1/2) = 2/3, R@3 = 1.
    # Image 1: one wrong above (0.9), both captions tied at 0.3 (m=2, t=0, g=1):
    #   R@1 = 0, R@2 = 1, R@3 = 1.
    # Captions: 0 -> [0.5, 0.9] rank 2; 1 -> [0.2, 0.1] rank 1; 2, 3 -> [0.5, 0.3] rank 2.
    assert got == pytest.approx(
        {
            "i2t_r1": 1 / 6,
            "i2t_r2": 5 / 6,
            "i2t_r3": 1.0,
            "t2i_r1": 1 / 4,
            "t2i_r2": 1.0,
            "t2i_r3": 1.0,
        }
    )


def test_expected_hits_closed_form():
    # m=2 correct tied with t=3 wrong: P(X >= j) = C(3, j) / C(5, j):
    # R@1 = 1 - 3/5, R@2 = 1 - 3/10, R@3 = 1 - 1/10, R@4 = 1.
    got = metrics.expected_hits(np.ones((1, 5)), np.array([[1, 1, 0, 0, 0]], bool), (1, 2, 3, 4))
    np.testing.assert_allclose(got, [[0.4, 0.7, 0.9, 1.0]])


def test_retrieval_all_tied_is_chance():
    # 4 images x 2 captions, all tied: R@1 = 2/8 per image; a caption finds its image 1/4.
    got = metrics.retrieval_recall(np.zeros((4, 8)), np.repeat(np.arange(4), 2), ks=(1, 2))
    assert got == pytest.approx(
        {"i2t_r1": 0.25, "i2t_r2": 1 - (6 / 8) * (5 / 7), "t2i_r1": 0.25, "t2i_r2": 0.5}
    )


def test_retrieval_brute_force():
    rng = np.random.default_rng(1)
    ks = (1, 2, 3, 5)
    for _ in range(15):
        n_img, n_txt = 3, 6
        t2i = np.concatenate([np.arange(n_img), rng.integers(0, n_img, n_txt - n_img)])
        rng.shuffle(t2i)
        sim = rng.integers(0, 3, size=(n_img, n_txt)).astype(float)
        got = metrics.retrieval_recall(sim, t2i, ks)
        i2t = np.mean([_brute_hits(sim[i], t2i == i, ks) for i in range(n_img)], axis=0)
        t2i_ref = np.mean(
            [_brute_hits(sim[:, j], np.arange(n_img) == t2i[j], ks) for j in range(n_txt)], axis=0
        )
        np.testing.assert_allclose([got[f"i2t_r{k}"] for k in ks], i2t)
        np.testing.assert_allclose([got[f"t2i_r{k}"] for k in ks], t2i_ref)


def test_retrieval_blocks_match_one_block(monkeypatch):
    rng = np.random.default_rng(2)
    sim = rng.integers(0, 4, size=(9, 20)).astype(np.float32)
    t2i = np.concatenate([np.arange(9), rng.integers(0, 9, 11)])
    whole = metrics.retrieval_recall(sim, t2i)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7)  # one row per block
    assert metrics.retrieval_recall(sim, t2i) == pytest.approx(whole)


def test_retrieval_image_without_caption():
    with pytest.raises(ValueError, match="image 1 has no caption"):
        metrics.retrieval_recall(np.zeros((3, 3)), np.array([0, 2, 2]))


# --------------------------------------------------------------------- classification


def test_topk_accuracy_hand_built():
    logits = np.array([[3, 1, 2], [1, 1, 1], [0, 5, 5]], float)
    labels = np.array([0, 2, 1])
    # Row 0 right at top 1; row 1 all tied: 1/3 and 2/3; row 2 label tied first with one
    # other: 1/2 and 1.  top1 = (1 + 1/3 + 1/2) / 3 = 11/18, top2 = (1 + 2/3 + 1) / 3 = 8/9.
    got = metrics.topk_accuracy(logits, labels, ks=(1, 2))
    assert got == pytest.approx({"top1": 11 / 18, "top2": 8 / 9})


def test_topk_all_tied_is_chance():
    got = metrics.topk_accuracy(np.zeros((6, 10)), np.arange(6), ks=(1, 5))
    assert got == pytest.approx({"top1": 0.1, "top5": 0.5})


def test_topk_brute_force():
    rng = np.random.default_rng(3)
    logits = rng.integers(0, 3, size=(12, 5)).astype(float)
    labels = rng.integers(0, 5, 12)
    got = metrics.topk_accuracy(logits, labels, ks=(1, 2, 3))
    ref = np.mean(
        [
            _brute_hits(row, np.arange(5) == y, (1, 2, 3))
            for row, y in zip(logits, labels, strict=True)
        ],
        axis=0,
    )
    np.testing.assert_allclose([got["top1"], got["top2"], got["top3"]], ref)


# -------------------------------------------------------------------------- precision


def test_precision_hand_built():
    scores = np.array([[3, 2, 2, 2, 1]], float)
    relevant = np.array([[0, 1, 0, 0, 1]], bool)
    got = metrics.precision_at_k(scores, relevant, ks=(1, 2, 3, 4, 5))
    # Top 1 is item 0 (not relevant). The 3-way tie (items 1-3, one relevant) gets 1, 2, 3
    # slots at k = 2, 3, 4: 1/3, 2/3, 1 relevant expected; k = 5 takes item 4 too.
    assert got == pytest.approx(
        {"p1": 0.0, "p2": (1 / 3) / 2, "p3": (2 / 3) / 3, "p4": 1 / 4, "p5": 2 / 5}
    )
    # Excluding item 0 (the query itself): candidates [2, 2, 2, 1], relevant [1, 0, 0, 1];
    # k = 10 > 4 candidates divides by 4.
    exclude = np.array([[1, 0, 0, 0, 0]], bool)
    got = metrics.precision_at_k(scores, relevant, ks=(1, 2, 4, 10), exclude=exclude)
    assert got == pytest.approx({"p1": 1 / 3, "p2": (2 / 3) / 2, "p4": 2 / 4, "p10": 2 / 4})


def test_precision_all_tied_is_base_rate():
    relevant = np.zeros((3, 10), bool)
    relevant[:, :4] = True
    got = metrics.precision_at_k(np.zeros((3, 10)), relevant, ks=(1, 5))
    assert got == pytest.approx({"p1": 0.4, "p5": 0.4})


def test_precision_brute_force():
    rng = np.random.default_rng(4)
    ks = (1, 2, 3, 6)
    for _ in range(10):
        scores = rng.integers(0, 3, size=(4, 6)).astype(float)
        relevant = rng.random((4, 6)) < 0.5
        exclude = np.zeros((4, 6), bool)
        exclude[np.arange(4), rng.integers(0, 6, 4)] = True
        got = metrics.precision_at_k(scores, relevant, ks, exclude=exclude)
        ref = np.mean(
            [_brute_precision(scores[q], relevant[q], exclude[q], ks) for q in range(4)], axis=0
        )
        np.testing.assert_allclose([got[f"p{k}"] for k in ks], ref)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.pair_accuracy(np.zeros((2, 2)), np.zeros((2, 2))), r"pos must be \[N\]"),
        (lambda: metrics.pair_accuracy(np.zeros(2), np.zeros(3)), "same shape"),
        (lambda: metrics.winoground_scores(np.zeros((3, 2, 3))), r"s must be \[N, 2, 2\].*3, 2, 3"),
        (
            lambda: metrics.retrieval_recall(np.zeros(4), np.zeros(4, int)),
            r"sim must be \[N_img, N_txt\].*\(4,\)",
        ),
        (
            lambda: metrics.retrieval_recall(np.zeros((2, 3)), np.zeros(2, int)),
            r"txt_to_img must be int \[N_txt\] = \[3\]",
        ),
        (lambda: metrics.retrieval_recall(np.zeros((2, 2)), np.array([0.0, 1.0])), "txt_to_img"),
        (lambda: metrics.retrieval_recall(np.zeros((2, 2)), np.array([0, 2])), "image indices"),
        (
            lambda: metrics.topk_accuracy(np.zeros((3, 4)), np.zeros((3, 1), int)),
            r"labels must be int \[N\] = \[3\]",
        ),
        (lambda: metrics.topk_accuracy(np.zeros((2, 4)), np.array([0, 4])), "class indices"),
        (
            lambda: metrics.precision_at_k(np.zeros((2, 4)), np.zeros((2, 3), bool)),
            r"relevant must have the shape of scores \(2, 4\)",
        ),
        (
            lambda: metrics.precision_at_k(
                np.zeros((1, 2)), np.ones((1, 2), bool), exclude=np.ones((1, 2), bool)
            ),
            "query 0 has no candidate",
        ),
        (lambda: metrics.topk_accuracy(np.array([[np.nan, 1.0]]), np.array([0])), "finite"),
        (lambda: metrics.topk_accuracy(np.zeros((2, 3)), np.array([0, 1]), ks=(0,)), "ks"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
