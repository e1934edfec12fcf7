"""Values and gradients of `cclip_jax.losses` against float64 numpy references, and the
bias initialisations. Edge cases (zero and tiny norms, bfloat16, a too small `max_present`,
bad arguments) are in test_losses_edge_cases.py."""

import functools

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
import pytest
from jax.test_util import check_grads
from loss_cases import (
    BIAS,
    SCALE,
    UW,
    grads_f32,
    grads_f64,
    jax_conditional,
    random_case,
    ref_conditional,
    tight_max_present,
)

from cclip_jax import losses

CASES = {
    "b6_k4": random_case(6, 4, 5),
    "k1": random_case(5, 1, 3, seed=1, p=(0.2, 0.2, 0.6)),
    "b8_k11_sparse_rows": random_case(8, 11, 4, seed=2, no_present_rows=(0, 3), unknown_cols=(5,)),
    "b4_k9_all_unknown_cols": random_case(4, 9, 6, seed=3, unknown_cols=(0, 1, 2)),
}


# (normalize, cross_positive_weight): the SigLIP-style sum, the weighted mean, and β.
OBJECTIVES = [("batch", 1.0), ("triples", 1.0), ("triples", 0.3), ("batch", 0.0)]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("path", ["dense", "sparse", "sparse_loose_bound"])
@pytest.mark.parametrize(("normalize", "beta"), OBJECTIVES)
def test_conditional_matches_float64_reference(name, path, normalize, beta):
    x, t, c, labels = CASES[name]
    max_present = {
        "dense": None,
        "sparse": tight_max_present(labels),
        "sparse_loose_bound": tight_max_present(labels) + 3,
    }[path]
    value, grads = grads_f32(jax_conditional(max_present, normalize, beta), x, t, c, labels)
    f_ref = functools.partial(ref_conditional, normalize=normalize, beta=beta)
    ref_value, ref_grads = grads_f64(f_ref, x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("beta", [1.0, 0.0, 0.4])
def test_triple_weight_sum_counts_the_weighted_triples(beta):
    _, _, _, labels = CASES["b8_k11_sparse_rows"]
    a, b = labels.T[:, :, None], labels.T[:, None, :]
    w_pos = ((a == 1) & (b == 1)) * np.where(np.eye(8, dtype=bool), 1.0, beta)
    w_neg = (((a == 1) & (b == -1)) | ((a == -1) & (b == 1))) + UW * (
        ((a == 1) & (b == 0)) | ((a == 0) & (b == 1))
    )
    got = losses.triple_weight_sum(
        jnp.asarray(labels), unknown_weight=UW, cross_positive_weight=beta
    )
    np.testing.assert_allclose(got, (w_pos + w_neg).sum(), rtol=1e-6)


@pytest.mark.parametrize("max_present", [None, 2])
def test_batch_without_counted_triples_is_zero_with_finite_gradients(max_present):
    x, t, c, _ = random_case(6, 4, 5, seed=11)
    for labels in (np.zeros((6, 4), np.int8), np.full((6, 4), -1, np.int8)):
        value, grads = grads_f32(jax_conditional(max_present, "triples", 0.5), x, t, c, labels)
        assert float(value) == 0.0
        for g in grads:
            np.testing.assert_array_equal(g, 0.0)


def test_triples_normalisation_does_not_grow_with_the_batch():
    """The same rows tiled 4 times: the triples mean barely moves, the batch sum grows ~4x
    (every row now meets 4x as many captions): λ keeps its meaning only under "triples"."""
    x, t, c, labels = CASES["b6_k4"]
    big = [np.tile(a, (4, 1)) for a in (x, t, labels)]
    kw = dict(scale=SCALE, bias=BIAS, unknown_weight=UW)
    for normalize, lo, hi in (("triples", 0.8, 1.25), ("batch", 3.0, 5.0)):
        small_v = losses.conditional_sigmoid_loss(x, t, c, labels, normalize=normalize, **kw)
        big_v = losses.conditional_sigmoid_loss(
            big[0], big[1], c, big[2], normalize=normalize, **kw
        )
        assert lo < float(big_v / small_v) < hi, (normalize, float(big_v / small_v))


@pytest.mark.parametrize("name", ["b6_k4", "k1"])
def test_sigmoid_matches_float64_reference(name):
    x, t, c, labels = CASES[name]

    def f(x, t, c, labels, scale, bias):
        return losses.sigmoid_loss(x, t, scale=scale, bias=bias)

    def f_ref(x, t, c, labels, scale, bias):
        return ref.sigmoid_loss(x, t, scale, bias)

    value, grads = grads_f32(f, x, t, c, labels)
    ref_value, ref_grads = grads_f64(f_ref, x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want in zip(grads[:2] + grads[3:], ref_grads[:2] + ref_grads[3:], strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    np.testing.assert_array_equal(grads[2], 0.0)  # concepts are unused by the plain loss


def test_sigmoid_pair_ids_make_multi_positives():
    x, t, c, labels = CASES["b8_k11_sparse_rows"]
    ids = np.array([0, 1, 0, 3, 4, 1, 6, 0], np.int32)  # rows 0, 2, 7 and 1, 5 are duplicates

    def f(x, t, c, labels, scale, bias):
        return losses.sigmoid_loss(x, t, scale=scale, bias=bias, pair_ids=jnp.asarray(ids))

    def f_ref(x, t, c, labels, scale, bias):
        return ref.sigmoid_loss(x, t, scale, bias, ids)

    value, grads = grads_f32(f, x, t, c, labels)
    ref_value, ref_grads = grads_f64(f_ref, x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want in zip(grads[:2] + grads[3:], ref_grads[:2] + ref_grads[3:], strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    plain = losses.sigmoid_loss(jnp.float32(x), jnp.float32(t), scale=SCALE, bias=BIAS)
    same = losses.sigmoid_loss(
        jnp.float32(x), jnp.float32(t), scale=SCALE, bias=BIAS, pair_ids=jnp.arange(8)
    )
    np.testing.assert_allclose(same, plain, rtol=1e-6)  # unique ids: the diagonal, as default


def test_pair_ids_from_tokens_are_each_rows_first_duplicate():
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 4, size=(40, 3)).astype(np.int32)  # many exact duplicates
    got = np.asarray(jax.jit(losses.pair_ids_from_tokens)(jnp.asarray(tokens)))
    want = [min(i for i in range(40) if (tokens[i] == tokens[j]).all()) for j in range(40)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["b6_k4", "b8_k11_sparse_rows"])
def test_softmax_matches_float64_reference(name):
    x, t, c, labels = CASES[name]

    def f(x, t, c, labels, scale, bias):
        return losses.softmax_loss(x, t, scale=scale) + 0 * bias

    def f_ref(x, t, c, labels, scale, bias):
        return ref.softmax_loss(x, t, scale)

    value, grads = grads_f32(f, x, t, c, labels)
    ref_value, ref_grads = grads_f64(f_ref, x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want in zip(grads[:2] + grads[3:4], ref_grads[:2] + ref_grads[3:4], strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    with jax.enable_x64(True):
        g = jax.jit(lambda x, t, s: losses.softmax_loss(x, t, scale=s))
        args = [jnp.asarray(a, jnp.float64) for a in (x, t, SCALE)]
        np.testing.assert_allclose(g(*args), ref.softmax_loss(x, t, SCALE), rtol=1e-12)
        check_grads(g, args, order=1, modes=["rev"], eps=1e-6)


def test_tiles_and_concept_chunks_match_reference(monkeypatch):
    """Small tile budget: several caption tiles, concept chunks with padding, row chunks."""
    monkeypatch.setattr(losses._engine, "TILE_ELEMENTS", 64)
    x, t, c, labels = random_case(12, 7, 3, seed=5)
    want = ref_conditional(x, t, c, labels, SCALE, BIAS)
    for max_present in (None, tight_max_present(labels)):
        f = jax.jit(jax_conditional(max_present))
        got = f(*(jnp.float32(a) for a in (x, t, c)), labels, SCALE, BIAS)
        np.testing.assert_allclose(got, want, rtol=2e-5)
    got = losses.sigmoid_loss(jnp.float32(x), jnp.float32(t), scale=SCALE, bias=BIAS)
    np.testing.assert_allclose(got, ref.sigmoid_loss(x, t, SCALE, BIAS), rtol=2e-5)


@pytest.mark.parametrize("max_present", [None, 1, 4])
def test_identity_gates_and_eye_labels_equal_sigmoid_loss(max_present):
    x, t, _, _ = random_case(7, 7, 5, seed=4)
    x, t = jnp.float32(x), jnp.float32(t)
    plain = losses.sigmoid_loss(x, t, scale=SCALE, bias=BIAS)
    cond = losses.conditional_sigmoid_loss(
        x, t, jnp.ones((7, 5)), jnp.eye(7, dtype=jnp.int8),
        scale=SCALE, bias=BIAS, unknown_weight=0.5, max_present=max_present, normalize="batch",
    )  # fmt: skip
    np.testing.assert_allclose(cond, plain, rtol=1e-6)


@pytest.mark.parametrize("max_present", [None, 6])
def test_gates_of_ones_are_a_pair_loss_with_concept_label_counts(max_present):
    """The experiment's `cclip_gate_ones` arm: with every gate 1 the conditional term is a
    plain (ungated) sigmoid loss over pairs, each pair (i, j) weighted by how many concepts
    make it a positive (+1,+1), a negative (+1,-1) or an unknown (+1,0)."""
    x, t, _, labels = random_case(8, 6, 5, seed=9)
    pos = (labels[:, None, :] == 1) & (labels[None, :, :] == 1)
    one = (labels[:, None, :] == 1) ^ (labels[None, :, :] == 1)  # exactly one side +1
    other = np.where(labels[:, None, :] == 1, labels[None, :, :], labels[:, None, :])
    neg, unk = (one & (other == -1)).sum(-1), (one & (other == 0)).sum(-1)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    z = SCALE * xn @ tn.T + BIAS
    want = (pos.sum(-1) * np.logaddexp(0, -z) + (neg + UW * unk) * np.logaddexp(0, z)).sum() / 8
    got = losses.conditional_sigmoid_loss(
        jnp.float32(x),
        jnp.float32(t),
        jnp.ones((6, 5)),
        labels,
        scale=SCALE,
        bias=BIAS,
        unknown_weight=UW,
        max_present=max_present,
        normalize="batch",
    )
    np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(("normalize", "beta"), [("batch", 1.0), ("triples", 0.5)])
def test_check_grads_in_float64(sparse, normalize, beta):
    x, t, c, labels = CASES["b8_k11_sparse_rows"]
    max_present = tight_max_present(labels) if sparse else None
    with jax.enable_x64(True):
        f = functools.partial(
            jax_conditional(max_present, normalize, beta), labels=jnp.asarray(labels)
        )
        g = jax.jit(lambda x, t, c, s, b: f(x, t, c, scale=s, bias=b))
        args = [jnp.asarray(a, jnp.float64) for a in (x, t, c, SCALE, BIAS)]
        assert g(*args).dtype == jnp.float64
        want = ref_conditional(x, t, c, labels, SCALE, BIAS, normalize, beta)
        np.testing.assert_allclose(g(*args), want, rtol=1e-12)
        check_grads(g, args, order=1, modes=["rev"], eps=1e-6)


def test_bias_inits_balance_the_gradient_of_the_bias():
    """At `bias = init` and every cosine 0 the bias gets no gradient: positives and negatives
    pull equally, for the plain term (one positive per row) and the conditional one."""
    _, _, _, labels = CASES["b8_k11_sparse_rows"]
    b = labels.shape[0]
    zeros = jnp.zeros((b, 4)).at[:, 0].set(1.0)  # every cosine 1 -> scale 0 makes z = bias
    grad_bias = jax.grad(lambda bias: losses.sigmoid_loss(zeros, zeros, scale=0.0, bias=bias))
    assert abs(float(grad_bias(losses.sigmoid_bias_init(b)))) < 1e-6
    for beta in (1.0, 0.3):
        bias0 = losses.conditional_bias_init(
            losses.triple_sums(labels), unknown_weight=UW, cross_positive_weight=beta
        )
        g = jax.grad(
            lambda bias, beta=beta: losses.conditional_sigmoid_loss(
                zeros,
                zeros,
                jnp.ones((11, 4)),
                jnp.asarray(labels),
                scale=0.0,
                bias=bias,
                unknown_weight=UW,
                cross_positive_weight=beta,
            )
        )(bias0)
        assert abs(float(g)) < 1e-6, (beta, float(g))
    with pytest.raises(ValueError, match="no positive"):
        losses.positive_triple_rate(losses.triple_sums(-np.ones((4, 3))))
