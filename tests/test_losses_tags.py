"""`concept_sigmoid_loss` (the `tags` control) against its float64 reference, sharded too."""

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from cclip_jax import losses

SCALE, BIAS, UW = 3.0, -1.5, 0.7


def _case(b=8, k=5, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x, c = rng.normal(size=(b, d)), rng.normal(size=(k, d))
    labels = rng.choice([-1, 0, 1, 2], size=(b, k), p=(0.3, 0.3, 0.3, 0.1)).astype(np.int8)
    return x, c, labels  # label 2: outside {-1, 0, +1}, ignored


def _f(axis_name=None):
    def f(x, c, labels, scale, bias):
        return losses.concept_sigmoid_loss(
            x, c, labels, scale=scale, bias=bias, unknown_weight=UW, axis_name=axis_name
        )

    return f


def _ref_value_and_grads(x, c, labels):
    f = lambda x, c, labels, s, b: ref.concept_sigmoid_loss(x, c, labels, s, b, UW)
    args = [x, c, labels, SCALE, BIAS]
    return f(*args), [ref.numeric_grad(f, args, i) for i in (0, 1, 3, 4)]


@pytest.mark.parametrize("mesh_shape", [None, (1,), (2,), (4,), (8,)])
def test_concept_sigmoid_matches_float64_reference(mesh_shape):
    x, c, labels = _case()
    want_v, want_g = _ref_value_and_grads(x, c, labels)
    f = _f()
    if mesh_shape is not None:
        mesh = jax.make_mesh(
            mesh_shape, ("d",), axis_types=(AxisType.Auto,), devices=jax.devices()[: mesh_shape[0]]
        )
        f = jax.shard_map(
            _f("d"), mesh=mesh, in_specs=(P("d"), P(), P("d"), P(), P()), out_specs=P()
        )
    args = (np.float32(x), np.float32(c), labels, np.float32(SCALE), np.float32(BIAS))
    v, g = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 3, 4)))(*args)
    np.testing.assert_allclose(v, want_v, rtol=2e-5)
    for got, want in zip(g, want_g, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_no_counted_pair_is_zero_with_zero_gradients():
    x, c, _ = _case()
    labels = np.full((8, 5), 2, np.int8)
    v, g = jax.value_and_grad(_f(), argnums=(0, 1))(
        jnp.float32(x), jnp.float32(c), labels, SCALE, BIAS
    )
    assert float(v) == 0.0 and all(np.all(np.asarray(a) == 0) for a in g)
