"""Edge cases of `cclip_jax.losses`: zero and tiny-norm embeddings (values and gradients
against the float64 references), bfloat16 inputs, a `max_present` bound that is too small
(NaN, not a silently wrong loss), and bad arguments named in the error."""

import functools

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
import pytest
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


@pytest.mark.parametrize("max_present", [None, 2])
def test_zero_gates_and_zero_embeddings_have_finite_gradients(max_present):
    x, t, c, labels = random_case(5, 4, 3, seed=6)
    x[0] = 0.0  # a zero image embedding
    c[1] = 0.0  # a zero (padding) concept that is still present in some rows
    labels[:, 1] = np.where(labels[:, 1] == 1, 1, 0)
    labels[(labels == 1).sum(1) > 2] = 0
    value, grads = grads_f32(jax_conditional(max_present), x, t, c, labels)
    assert np.isfinite(value)
    for g in grads:
        assert np.all(np.isfinite(g))
    np.testing.assert_allclose(value, ref_conditional(x, t, c, labels, SCALE, BIAS), rtol=2e-5)


def test_more_present_than_max_present_is_nan():
    x, t, c, labels = random_case(6, 5, 4, seed=7)
    bound = tight_max_present(labels)
    ok = jax.jit(jax_conditional(bound))(*(jnp.float32(a) for a in (x, t, c)), labels, SCALE, BIAS)
    assert np.isfinite(ok)
    value, grads = grads_f32(jax_conditional(bound - 1), x, t, c, labels)
    assert np.isnan(value)
    assert all(np.isnan(g).any() for g in grads)  # the update is poisoned, not just the loss


def test_bfloat16_inputs_are_computed_in_float32():
    x, t, c, labels = random_case(6, 4, 8, seed=8)
    bf = [jnp.asarray(a, jnp.bfloat16) for a in (x, t, c)]
    got = jax_conditional(None)(*bf, labels, SCALE, BIAS)
    assert got.dtype == jnp.float32
    want = ref_conditional(*(np.asarray(a, np.float64) for a in bf), labels, SCALE, BIAS)
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
        "sigmoid": (
            lambda x, t, c, lab: losses.sigmoid_loss(x, t, **kw),
            lambda x, t, c, lab: ref.sigmoid_loss(x, t, SCALE, BIAS),
        ),
        "sigmoid_negclip": (
            lambda x, t, c, lab: losses.sigmoid_loss(
                x, t, **kw, hard_text_emb=h_of(t), hard_valid=jnp.asarray(valid)
            ),
            lambda x, t, c, lab: ref.sigmoid_loss_negclip(x, t, h_of(t), valid, SCALE, BIAS),
        ),
        "softmax": (
            lambda x, t, c, lab: losses.softmax_loss(x, t, scale=SCALE),
            lambda x, t, c, lab: ref.softmax_loss(x, t, SCALE),
        ),
        "softmax_negclip": (
            lambda x, t, c, lab: losses.softmax_loss(
                x, t, scale=SCALE, hard_text_emb=h_of(t), hard_valid=jnp.asarray(valid)
            ),
            lambda x, t, c, lab: ref.softmax_loss_negclip(x, t, h_of(t), valid, SCALE),
        ),
        "conditional_dense": (
            lambda x, t, c, lab: jax_conditional(None, "triples", 0.5)(x, t, c, lab, SCALE, BIAS),
            lambda x, t, c, lab: ref_conditional(x, t, c, lab, SCALE, BIAS, "triples", 0.5),
        ),
        "conditional_sparse": (
            lambda x, t, c, lab: jax_conditional(tight_max_present(lab), "batch")(
                x, t, c, lab, SCALE, BIAS
            ),
            lambda x, t, c, lab: ref_conditional(x, t, c, lab, SCALE, BIAS, "batch"),
        ),
        "tags": (
            lambda x, t, c, lab: losses.concept_sigmoid_loss(x, c, lab, **kw, unknown_weight=UW),
            lambda x, t, c, lab: ref.concept_sigmoid_loss(x, c, lab, SCALE, BIAS, UW),
        ),
        "ranking": (
            lambda x, t, c, lab: losses.conditional_ranking_loss(
                x, t, c, lab, scale=SCALE, unknown_weight=UW
            ),
            lambda x, t, c, lab: ref.conditional_ranking_loss(x, t, c, lab, SCALE, UW),
        ),
        "pooled": (
            lambda x, t, c, lab: losses.pooled_conditional_sigmoid_loss(
                pooled_xc(x, c), t, lab, **kw, unknown_weight=UW
            ),
            lambda x, t, c, lab: ref.pooled_conditional_sigmoid_loss(
                pooled_xc(x, c), t, lab, SCALE, BIAS, UW
            ),
        ),
    }


@pytest.mark.parametrize("name", sorted(_tiny_norm_losses()))
def test_tiny_norm_embeddings_match_float64_reference(name):
    """Embeddings with norms 1e-7 to 3e-4 (every other reference case has norms near 1): the
    cosine's clamp is `max(‖v‖, ε)`, ε = 1e-6, computed as `rsqrt(max(‖v‖², ε²))`. Clamping
    `‖v‖²` at ε instead would shrink every cosine of a norm below 1e-3."""
    x, t, c, labels = random_case(6, 4, 5, seed=21)
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
    x, t, c, labels = random_case(6, 4, 5, seed=22)
    labels[(labels == 1).sum(1) > 2] = -1  # at most 2 present concepts per row
    s = 1e-4
    value, grads = grads_f32(jax_conditional(max_present, "triples", 0.5), s * x, s * t, c, labels)
    f_ref = functools.partial(ref_conditional, normalize="triples", beta=0.5)
    ref_value, ref_grads = grads_f64(f_ref, x, t, c, labels)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want, scale in zip(grads, ref_grads, (s, s, 1, 1, 1), strict=True):
        np.testing.assert_allclose(np.asarray(got) * scale, want, rtol=2e-4, atol=2e-5)
    value, grads = grads_f32(
        lambda x, t, c, lab, scale, bias: losses.sigmoid_loss(x, t, scale=scale, bias=bias),
        s * x,
        s * t,
        c,
        labels,
    )
    ref_value, ref_grads = grads_f64(
        lambda x, t, c, lab, scale, bias: ref.sigmoid_loss(x, t, scale, bias), x, t, c, labels
    )
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    for got, want, scale in zip(grads[:2], ref_grads[:2], (s, s), strict=True):
        np.testing.assert_allclose(np.asarray(got) * scale, want, rtol=2e-4, atol=2e-5)
