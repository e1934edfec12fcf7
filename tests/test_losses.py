"""Values and gradients of `cclip_jax.losses` against float64 numpy references."""

import functools

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
import pytest
from jax.test_util import check_grads

from cclip_jax import losses

SCALE, BIAS, UW = 3.0, -1.5, 0.7


def _case(b, k, d, seed=0, p=(0.3, 0.4, 0.3), no_present_rows=(), unknown_cols=()):
    """Random embeddings and labels; chosen rows get no `+1`, chosen columns are all `0`."""
    rng = np.random.default_rng(seed)
    x, t, c = rng.normal(size=(b, d)), rng.normal(size=(b, d)), rng.normal(size=(k, d))
    labels = rng.choice([-1, 0, 1], size=(b, k), p=p).astype(np.int8)
    for row in no_present_rows:
        labels[row][labels[row] == 1] = -1
    for col in unknown_cols:
        labels[:, col] = 0
    return x, t, c, labels


CASES = {
    "b6_k4": _case(6, 4, 5),
    "k1": _case(5, 1, 3, seed=1, p=(0.2, 0.2, 0.6)),
    "b8_k11_sparse_rows": _case(8, 11, 4, seed=2, no_present_rows=(0, 3), unknown_cols=(5,)),
    "b4_k9_all_unknown_cols": _case(4, 9, 6, seed=3, unknown_cols=(0, 1, 2)),
}


def _max_present(labels):
    return max(1, int((labels == 1).sum(1).max()))


# (normalize, cross_positive_weight): the SigLIP-style sum, the weighted mean, and β.
OBJECTIVES = [("batch", 1.0), ("triples", 1.0), ("triples", 0.3), ("batch", 0.0)]


def _jax_conditional(max_present, normalize="batch", beta=1.0):
    def f(x, t, c, labels, scale, bias):
        return losses.conditional_sigmoid_loss(
            x, t, c, labels, scale=scale, bias=bias, unknown_weight=UW, max_present=max_present,
            normalize=normalize, cross_positive_weight=beta,
        )  # fmt: skip

    return f


def _ref_conditional(x, t, c, labels, scale, bias, normalize="batch", beta=1.0):
    return ref.conditional_sigmoid_loss(x, t, c, labels, scale, bias, UW, beta, normalize)


def _grads_f32(f, x, t, c, labels):
    """Value and gradients w.r.t. (x, t, c, scale, bias), jitted as a training step would be."""
    args = [jnp.asarray(a, jnp.float32) for a in (x, t, c)]
    fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 4, 5)))
    return fn(*args, jnp.asarray(labels), jnp.float32(SCALE), jnp.float32(BIAS))


def _ref_grads(f, x, t, c, labels):
    value = f(x, t, c, labels, SCALE, BIAS)
    args = [x, t, c, labels, SCALE, BIAS]
    grads = [ref.numeric_grad(f, args, i) for i in (0, 1, 2, 4, 5)]
    return value, grads


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("path", ["dense", "sparse", "sparse_loose_bound"])
@pytest.mark.parametrize(("normalize", "beta"), OBJECTIVES)
def test_conditional_matches_float64_reference(name, path, normalize, beta):
    x, t, c, labels = CASES[name]
    max_present = {
        "dense": None,
        "sparse": _max_present(labels),
        "sparse_loose_bound": _max_present(labels) + 3,
    }[path]
    value, grads = _grads_f32(_jax_conditional(max_present, normalize, beta), x, t, c, labels)
    f_ref = functools.partial(_ref_conditional, normalize=normalize, beta=beta)
    ref_value, ref_grads = _ref_grads(f_ref, x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("beta", [1.0, 0.0, 0.4])
def test_triple_weight_sum_counts_the_weighted_triples(beta):
    _, _, _, labels = CASES["b8_k11_sparse_rows"]
    a, b = labels.T[:, :, None], labels.T[:, None, :]
    w_pos = ((a == 1) & (b == 1)) * np.where(np.eye(8, dtype=bool), 1.0, beta)
    w_neg = (((a == 1) & (b == -1)) | ((a == -1) & (b == 1))) + UW * (
        ((a == 1) & (b == 0)) | ((a == 0) & (b == 1)))
    got = losses.triple_weight_sum(jnp.asarray(labels), unknown_weight=UW,
                                   cross_positive_weight=beta)
    np.testing.assert_allclose(got, (w_pos + w_neg).sum(), rtol=1e-6)


@pytest.mark.parametrize("max_present", [None, 2])
def test_batch_without_counted_triples_is_zero_with_finite_gradients(max_present):
    x, t, c, _ = _case(6, 4, 5, seed=11)
    for labels in (np.zeros((6, 4), np.int8), np.full((6, 4), -1, np.int8)):
        value, grads = _grads_f32(_jax_conditional(max_present, "triples", 0.5), x, t, c, labels)
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
        big_v = losses.conditional_sigmoid_loss(big[0], big[1], c, big[2], normalize=normalize,
                                                **kw)
        assert lo < float(big_v / small_v) < hi, (normalize, float(big_v / small_v))


@pytest.mark.parametrize("name", ["b6_k4", "k1"])
def test_sigmoid_matches_float64_reference(name):
    x, t, c, labels = CASES[name]

    def f(x, t, c, labels, scale, bias):
        return losses.sigmoid_loss(x, t, scale=scale, bias=bias)

    def f_ref(x, t, c, labels, scale, bias):
        return ref.sigmoid_loss(x, t, scale, bias)

    value, grads = _grads_f32(f, x, t, c, labels)
    ref_value, ref_grads = _ref_grads(f_ref, x, t, c, labels)
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

    value, grads = _grads_f32(f, x, t, c, labels)
    ref_value, ref_grads = _ref_grads(f_ref, x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want in zip(grads[:2] + grads[3:], ref_grads[:2] + ref_grads[3:], strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    plain = losses.sigmoid_loss(jnp.float32(x), jnp.float32(t), scale=SCALE, bias=BIAS)
    same = losses.sigmoid_loss(jnp.float32(x), jnp.float32(t), scale=SCALE, bias=BIAS,
                               pair_ids=jnp.arange(8))
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

    value, grads = _grads_f32(f, x, t, c, labels)
    ref_value, ref_grads = _ref_grads(f_ref, x, t, c, labels)
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
    x, t, c, labels = _case(12, 7, 3, seed=5)
    want = _ref_conditional(x, t, c, labels, SCALE, BIAS)
    for max_present in (None, _max_present(labels)):
        f = jax.jit(_jax_conditional(max_present))
        got = f(*(jnp.float32(a) for a in (x, t, c)), labels, SCALE, BIAS)
        np.testing.assert_allclose(got, want, rtol=2e-5)
    got = losses.sigmoid_loss(jnp.float32(x), jnp.float32(t), scale=SCALE, bias=BIAS)
    np.testing.assert_allclose(got, ref.sigmoid_loss(x, t, SCALE, BIAS), rtol=2e-5)


@pytest.mark.parametrize("max_present", [None, 1, 4])
def test_identity_gates_and_eye_labels_equal_sigmoid_loss(max_present):
    x, t, _, _ = _case(7, 7, 5, seed=4)
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
    x, t, _, labels = _case(8, 6, 5, seed=9)
    pos = (labels[:, None, :] == 1) & (labels[None, :, :] == 1)
    one = (labels[:, None, :] == 1) ^ (labels[None, :, :] == 1)  # exactly one side +1
    other = np.where(labels[:, None, :] == 1, labels[None, :, :], labels[:, None, :])
    neg, unk = (one & (other == -1)).sum(-1), (one & (other == 0)).sum(-1)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    z = SCALE * xn @ tn.T + BIAS
    want = (pos.sum(-1) * np.logaddexp(0, -z) + (neg + UW * unk) * np.logaddexp(0, z)).sum() / 8
    got = losses.conditional_sigmoid_loss(
        jnp.float32(x), jnp.float32(t), jnp.ones((6, 5)), labels, scale=SCALE, bias=BIAS,
        unknown_weight=UW, max_present=max_present, normalize="batch")
    np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(("normalize", "beta"), [("batch", 1.0), ("triples", 0.5)])
def test_check_grads_in_float64(sparse, normalize, beta):
    x, t, c, labels = CASES["b8_k11_sparse_rows"]
    max_present = _max_present(labels) if sparse else None
    with jax.enable_x64(True):
        f = functools.partial(_jax_conditional(max_present, normalize, beta),
                              labels=jnp.asarray(labels))
        g = jax.jit(lambda x, t, c, s, b: f(x, t, c, scale=s, bias=b))
        args = [jnp.asarray(a, jnp.float64) for a in (x, t, c, SCALE, BIAS)]
        assert g(*args).dtype == jnp.float64
        want = _ref_conditional(x, t, c, labels, SCALE, BIAS, normalize, beta)
        np.testing.assert_allclose(g(*args), want, rtol=1e-12)
        check_grads(g, args, order=1, modes=["rev"], eps=1e-6)


@pytest.mark.parametrize("max_present", [None, 2])
def test_zero_gates_and_zero_embeddings_have_finite_gradients(max_present):
    x, t, c, labels = _case(5, 4, 3, seed=6)
    x[0] = 0.0  # a zero image embedding
    c[1] = 0.0  # a zero (padding) concept that is still present in some rows
    labels[:, 1] = np.where(labels[:, 1] == 1, 1, 0)
    labels[(labels == 1).sum(1) > 2] = 0
    value, grads = _grads_f32(_jax_conditional(max_present), x, t, c, labels)
    assert np.isfinite(value)
    for g in grads:
        assert np.all(np.isfinite(g))
    np.testing.assert_allclose(value, _ref_conditional(x, t, c, labels, SCALE, BIAS), rtol=2e-5)


def test_more_present_than_max_present_is_nan():
    x, t, c, labels = _case(6, 5, 4, seed=7)
    bound = _max_present(labels)
    ok = jax.jit(_jax_conditional(bound))(*(jnp.float32(a) for a in (x, t, c)), labels, SCALE, BIAS)
    assert np.isfinite(ok)
    value, grads = _grads_f32(_jax_conditional(bound - 1), x, t, c, labels)
    assert np.isnan(value)
    assert all(np.isnan(g).any() for g in grads)  # the update is poisoned, not just the loss


def test_bfloat16_inputs_are_computed_in_float32():
    x, t, c, labels = _case(6, 4, 8, seed=8)
    bf = [jnp.asarray(a, jnp.bfloat16) for a in (x, t, c)]
    got = _jax_conditional(None)(*bf, labels, SCALE, BIAS)
    assert got.dtype == jnp.float32
    want = _ref_conditional(*(np.asarray(a, np.float64) for a in bf), labels, SCALE, BIAS)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_emb": np.zeros((5, 4))}, "image_emb and text_emb"),
        ({"concept_emb": np.zeros((3, 5))}, "concept_emb must be"),
        ({"concept_labels": np.zeros((6, 4), np.int8)}, "concept_labels must be"),
        ({"concept_labels": np.zeros((6, 3), np.float32)}, "must be integer"),
        ({"max_present": 0}, "max_present"),
        ({"normalize": "mean"}, "normalize="),
        ({"scale": np.ones(2)}, "scale must be a scalar"),
        ({"axis_name": "data"}, "not split over that mesh axis"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message):
    args = {
        "image_emb": np.zeros((6, 4)), "text_emb": np.zeros((6, 4)),
        "concept_emb": np.zeros((3, 4)), "concept_labels": np.zeros((6, 3), np.int8),
        "scale": 1.0, "bias": 0.0,
    }  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        losses.conditional_sigmoid_loss(
            **{k: v if isinstance(v, str) else jnp.asarray(v) for k, v in args.items()}
        )


def test_bias_inits_balance_the_gradient_of_the_bias():
    """At `bias = init` and every cosine 0 the bias gets no gradient: positives and negatives
    pull equally, for the plain term (one positive per row) and the conditional one."""
    _, _, _, labels = CASES["b8_k11_sparse_rows"]
    b = labels.shape[0]
    zeros = jnp.zeros((b, 4)).at[:, 0].set(1.0)  # every cosine 1 -> scale 0 makes z = bias
    grad_bias = jax.grad(lambda bias: losses.sigmoid_loss(zeros, zeros, scale=0.0, bias=bias))
    assert abs(float(grad_bias(losses.sigmoid_bias_init(b)))) < 1e-6
    for beta in (1.0, 0.3):
        bias0 = losses.conditional_bias_init(losses.triple_sums(labels), unknown_weight=UW,
                                             cross_positive_weight=beta)
        g = jax.grad(lambda bias, beta=beta: losses.conditional_sigmoid_loss(
            zeros, zeros, jnp.ones((11, 4)), jnp.asarray(labels), scale=0.0, bias=bias,
            unknown_weight=UW, cross_positive_weight=beta))(bias0)
        assert abs(float(g)) < 1e-6, (beta, float(g))
    with pytest.raises(ValueError, match="no positive"):
        losses.positive_triple_rate(losses.triple_sums(-np.ones((4, 3))))


def _tiny_rows(a, seed, axis=-1):
    """`a` with every embedding (last axis) rescaled to a norm in [1e-7, 3e-4]: below the
    clamp ε = 1e-6 (where `max(‖v‖, ε)` is active) and between ε and 1e-3 (where it is not, but
    a clamp of `‖v‖²` at ε instead of ε² would be)."""
    rng = np.random.default_rng(seed)
    norms = rng.choice([1e-7, 5e-7, 3e-6, 2e-5, 1e-4, 3e-4], size=a.shape[:-1])
    return a / np.linalg.norm(a, axis=axis, keepdims=True) * norms[..., None]


def _tiny_norm_losses():
    """name -> (jax loss, float64 reference), each `f(x, t, c, labels)` at SCALE, BIAS, UW."""
    kw = dict(scale=SCALE, bias=BIAS)
    valid = np.array([1, 0, 1, 1, 0, 1], bool)
    h_of = lambda t: np.roll(t, 1, axis=0)  # the hard negatives: other rows' (tiny) captions

    def pooled_xc(x, c):
        return x[:, None, :] * c[None, :, :] * np.array([1.0, 0.5, 2.0, 1.0])[None, :, None]

    return {
        "sigmoid": (lambda x, t, c, lab: losses.sigmoid_loss(x, t, **kw),
                    lambda x, t, c, lab: ref.sigmoid_loss(x, t, SCALE, BIAS)),
        "sigmoid_negclip": (
            lambda x, t, c, lab: losses.sigmoid_loss(
                x, t, **kw, hard_text_emb=h_of(t), hard_valid=jnp.asarray(valid)),
            lambda x, t, c, lab: ref.sigmoid_loss_negclip(x, t, h_of(t), valid, SCALE, BIAS)),
        "softmax": (lambda x, t, c, lab: losses.softmax_loss(x, t, scale=SCALE),
                    lambda x, t, c, lab: ref.softmax_loss(x, t, SCALE)),
        "softmax_negclip": (
            lambda x, t, c, lab: losses.softmax_loss(
                x, t, scale=SCALE, hard_text_emb=h_of(t), hard_valid=jnp.asarray(valid)),
            lambda x, t, c, lab: ref.softmax_loss_negclip(x, t, h_of(t), valid, SCALE)),
        "conditional_dense": (
            lambda x, t, c, lab: _jax_conditional(None, "triples", 0.5)(
                x, t, c, lab, SCALE, BIAS),
            lambda x, t, c, lab: _ref_conditional(x, t, c, lab, SCALE, BIAS, "triples", 0.5)),
        "conditional_sparse": (
            lambda x, t, c, lab: _jax_conditional(_max_present(lab), "batch")(
                x, t, c, lab, SCALE, BIAS),
            lambda x, t, c, lab: _ref_conditional(x, t, c, lab, SCALE, BIAS, "batch")),
        "tags": (
            lambda x, t, c, lab: losses.concept_sigmoid_loss(x, c, lab, **kw, unknown_weight=UW),
            lambda x, t, c, lab: ref.concept_sigmoid_loss(x, c, lab, SCALE, BIAS, UW)),
        "ranking": (
            lambda x, t, c, lab: losses.conditional_ranking_loss(x, t, c, lab, scale=SCALE,
                                                                 unknown_weight=UW),
            lambda x, t, c, lab: ref.conditional_ranking_loss(x, t, c, lab, SCALE, UW)),
        "pooled": (
            lambda x, t, c, lab: losses.pooled_conditional_sigmoid_loss(
                pooled_xc(x, c), t, lab, **kw, unknown_weight=UW),
            lambda x, t, c, lab: ref.pooled_conditional_sigmoid_loss(
                pooled_xc(x, c), t, lab, SCALE, BIAS, UW)),
    }


@pytest.mark.parametrize("name", sorted(_tiny_norm_losses()))
def test_tiny_norm_embeddings_match_float64_reference(name):
    """Embeddings with norms 1e-7 to 3e-4 (every other reference case has norms near 1): the
    cosine's clamp is `max(‖v‖, ε)`, ε = 1e-6, computed as `rsqrt(max(‖v‖², ε²))`. Clamping
    `‖v‖²` at ε instead would shrink every cosine of a norm below 1e-3."""
    x, t, c, labels = _case(6, 4, 5, seed=21)
    x, t = _tiny_rows(x, 1), _tiny_rows(t, 2)
    if name == "tags":
        c = _tiny_rows(c, 3)  # the concepts are the other side of its cosine
    f, f_ref = _tiny_norm_losses()[name]
    got = f(jnp.float32(x), jnp.float32(t), jnp.float32(c), jnp.asarray(labels))
    np.testing.assert_allclose(got, f_ref(x, t, c, labels), rtol=2e-5)


@pytest.mark.parametrize("max_present", [None, 2])
def test_tiny_norm_gradients_match_float64_reference(max_present):
    """Gradients at norms ~1e-4 (above ε): the cosine is scale-free there, so the gradient at
    `s·v` is the float64 reference's gradient at `v` divided by `s`."""
    x, t, c, labels = _case(6, 4, 5, seed=22)
    labels[(labels == 1).sum(1) > 2] = -1  # at most 2 present concepts per row
    s = 1e-4
    value, grads = _grads_f32(_jax_conditional(max_present, "triples", 0.5), s * x, s * t, c,
                              labels)
    f_ref = functools.partial(_ref_conditional, normalize="triples", beta=0.5)
    ref_value, ref_grads = _ref_grads(f_ref, x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want, scale in zip(grads, ref_grads, (s, s, 1, 1, 1), strict=True):
        np.testing.assert_allclose(np.asarray(got) * scale, want, rtol=2e-4, atol=2e-5)
    value, grads = _grads_f32(lambda x, t, c, lab, scale, bias: losses.sigmoid_loss(
        x, t, scale=scale, bias=bias), s * x, s * t, c, labels)
    ref_value, ref_grads = _ref_grads(lambda x, t, c, lab, scale, bias: ref.sigmoid_loss(
        x, t, scale, bias), x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want, scale in zip(grads[:2], ref_grads[:2], (s, s), strict=True):
        np.testing.assert_allclose(np.asarray(got) * scale, want, rtol=2e-4, atol=2e-5)
