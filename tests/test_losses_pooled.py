"""`pooled_conditional_sigmoid_loss` (the pool arm) against its float64 reference: values,
gradients, β, both normalisations, tiles and padded concept chunks, and ring sharding."""

import functools

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
from loss_cases import cpu_mesh

from cclip_jax import losses

SCALE, BIAS, UW = 3.0, -1.5, 0.7
GRAD_ARGS = (0, 1, 3, 4, 5)  # xc, t, scale, bias, unknown_weight


def _case(b, k, d, seed=0, p=(0.3, 0.4, 0.3), odd_labels=False, zero_rows=()):
    rng = np.random.default_rng(seed)
    xc, t = rng.normal(size=(b, k, d)), rng.normal(size=(b, d))
    labels = rng.choice([-1, 0, 1], size=(b, k), p=p).astype(np.int8)
    if odd_labels:
        labels[rng.random((b, k)) < 0.2] = 2
        labels[rng.random((b, k)) < 0.1] = -3
    for i, kk in zero_rows:  # an all-zero x_{i|k} (the cosine's ε branch)
        xc[i, kk] = 0.0
    return xc, t, labels


CASES = {
    "b6_k4": _case(6, 4, 5),
    "k1": _case(5, 1, 3, seed=1, p=(0.2, 0.2, 0.6)),
    "b8_k11": _case(8, 11, 4, seed=2),
    "b7_k5_odd_labels_zero_emb": _case(7, 5, 4, seed=4, odd_labels=True, zero_rows=((1, 2),)),
}


def _loss(axis_name=None, beta=1.0, normalize="triples"):
    def f(xc, t, labels, scale, bias, uw):
        return losses.pooled_conditional_sigmoid_loss(
            xc,
            t,
            labels,
            scale=scale,
            bias=bias,
            unknown_weight=uw,
            cross_positive_weight=beta,
            normalize=normalize,
            axis_name=axis_name,
        )

    return f


def _ref(beta=1.0, normalize="triples"):
    def f(xc, t, labels, scale, bias, uw):
        return ref.pooled_conditional_sigmoid_loss(xc, t, labels, scale, bias, uw, beta, normalize)

    return f


def _f32_args(xc, t, labels):
    return (
        jnp.float32(xc),
        jnp.float32(t),
        jnp.asarray(labels),
        jnp.float32(SCALE),
        jnp.float32(BIAS),
        jnp.float32(UW),
    )


def _want(xc, t, labels, **kw):
    args = [xc, t, labels, SCALE, BIAS, UW]
    f = _ref(**kw)
    return f(*args), [ref.numeric_grad(f, args, i) for i in GRAD_ARGS]


def _check(got, want, msg=""):
    (value, grads), (want_value, want_grads) = got, want
    np.testing.assert_allclose(value, want_value, rtol=2e-5, err_msg=msg)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5, err_msg=msg)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("beta", [1.0, 0.3])
@pytest.mark.parametrize("normalize", ["triples", "batch"])
def test_matches_float64_reference(name, beta, normalize):
    xc, t, labels = CASES[name]
    f = jax.jit(jax.value_and_grad(_loss(beta=beta, normalize=normalize), argnums=GRAD_ARGS))
    _check(f(*_f32_args(xc, t, labels)), _want(xc, t, labels, beta=beta, normalize=normalize))


def test_check_grads_in_float64():
    xc, t, labels = _case(8, 6, 4, seed=5, odd_labels=True)
    with jax.enable_x64(True):
        f = functools.partial(_loss(beta=0.4), labels=jnp.asarray(labels))
        g = jax.jit(lambda xc, t, s, b, uw: f(xc, t, scale=s, bias=b, uw=uw))
        args = [jnp.asarray(a, jnp.float64) for a in (xc, t, SCALE, BIAS, UW)]
        assert g(*args).dtype == jnp.float64
        np.testing.assert_allclose(
            g(*args), _ref(beta=0.4)(xc, t, labels, SCALE, BIAS, UW), rtol=1e-12
        )
        check_grads(g, args, order=1, modes=["rev"], eps=1e-6)


def test_equal_embeddings_per_concept_is_the_ungated_conditional_loss():
    """`x_{i|k} = x_i` for every k: the loss is `conditional_sigmoid_loss` with every gate 1
    (the `cclip_gate_ones` control) — what the pool arm computes at its zero init."""
    xc, t, labels = _case(6, 4, 5, seed=6)
    x = xc[:, 0]
    got = losses.pooled_conditional_sigmoid_loss(
        jnp.float32(np.repeat(x[:, None], 4, axis=1)),
        jnp.float32(t),
        jnp.asarray(labels),
        scale=SCALE,
        bias=BIAS,
        unknown_weight=UW,
        cross_positive_weight=0.5,
    )
    want = losses.conditional_sigmoid_loss(
        jnp.float32(x),
        jnp.float32(t),
        jnp.ones((4, 5), jnp.float32),
        jnp.asarray(labels),
        scale=SCALE,
        bias=BIAS,
        unknown_weight=UW,
        cross_positive_weight=0.5,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_no_counted_triple_is_zero_with_zero_gradients():
    xc, t, _ = _case(6, 4, 5, seed=7)
    labels = np.random.default_rng(0).choice([-1, 0, 2], size=(6, 4)).astype(np.int8)
    value, grads = jax.value_and_grad(_loss(), argnums=(0, 1))(*_f32_args(xc, t, labels))
    assert float(value) == 0.0
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)


def test_shape_errors():
    xc, t, labels = (jnp.asarray(a) for a in _case(4, 3, 2))
    with pytest.raises(ValueError, match=r"\[B, K, D\]"):
        losses.pooled_conditional_sigmoid_loss(xc[:, 0], t, labels, scale=1.0, bias=0.0)
    with pytest.raises(ValueError, match="concept_labels"):
        losses.pooled_conditional_sigmoid_loss(xc, t, labels[:, :2], scale=1.0, bias=0.0)
    with pytest.raises(ValueError, match="normalize"):
        losses.pooled_conditional_sigmoid_loss(xc, t, labels, scale=1.0, bias=0.0, normalize="rows")


def _sharded(mesh, axis, **kw):
    specs = (P(axis), P(axis), P(axis), P(), P(), P())
    return jax.shard_map(_loss(axis, **kw), mesh=mesh, in_specs=specs, out_specs=P())


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_ring_sharded_matches_float64_reference(beta):
    """Value and gradients on 1, 2, 4 and 8 devices (and a 2 x 2 mesh) against float64."""
    xc, t, labels = _case(16, 5, 6, seed=8, odd_labels=True)
    want = _want(xc, t, labels, beta=beta)
    for shape, names in (
        ((1,), ("d",)),
        ((2,), ("d",)),
        ((4,), ("d",)),
        ((8,), ("d",)),
        ((2, 2), ("a", "b")),
    ):
        axis = names if len(names) > 1 else names[0]
        f = jax.jit(
            jax.value_and_grad(_sharded(cpu_mesh(shape, names), axis, beta=beta), argnums=GRAD_ARGS)
        )
        _check(f(*_f32_args(xc, t, labels)), want, msg=f"mesh {shape}")


def test_tiles_and_padded_concept_chunks_match_reference(monkeypatch):
    """An 84-element tile budget at 14 rows a device: 7 caption tiles of 2 rows, 3 concept
    chunks of 3 (7 concepts, 2 padding), unsharded and on a ring of 2 devices."""
    monkeypatch.setattr(losses._engine, "TILE_ELEMENTS", 84)
    for b, shape in ((14, None), (28, (2,))):
        xc, t, labels = _case(b, 7, 3, seed=9)
        f = _loss() if shape is None else _sharded(cpu_mesh(shape, ("d",)), "d")
        got = jax.jit(jax.value_and_grad(f, argnums=GRAD_ARGS))(*_f32_args(xc, t, labels))
        _check(got, _want(xc, t, labels), msg=f"B={b}")
