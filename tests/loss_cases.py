"""Shared pieces of the loss tests: random cases, the conditional loss as a function of its
inputs, and value and gradients from JAX (float32, jitted) and from the float64 references."""

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
from jax.sharding import AxisType

from cclip_jax import losses

SCALE, BIAS, UW = 3.0, -1.5, 0.7  # temperature, bias and unknown weight of every case


def random_case(b, k, d, seed=0, p=(0.3, 0.4, 0.3), no_present_rows=(), unknown_cols=(),
                zero_concepts=(), odd_labels=False):  # fmt: skip
    """Random embeddings and labels; chosen rows get no `+1`, chosen columns are all `0`,
    chosen concepts are zero vectors, and `odd_labels` puts values outside {-1, 0, 1}."""
    rng = np.random.default_rng(seed)
    x, t, c = rng.normal(size=(b, d)), rng.normal(size=(b, d)), rng.normal(size=(k, d))
    labels = rng.choice([-1, 0, 1], size=(b, k), p=p).astype(np.int8)
    for row in no_present_rows:
        labels[row][labels[row] == 1] = -1
    for col in unknown_cols:
        labels[:, col] = 0
    c[list(zero_concepts)] = 0.0
    if odd_labels:  # drawn last: the cases without them stay what they were
        labels[rng.random((b, k)) < 0.2] = 2
        labels[rng.random((b, k)) < 0.1] = -3
    return x, t, c, labels


def cpu_mesh(shape, names):
    """A mesh of the first `prod(shape)` (fake CPU) devices with Auto axes."""
    n = int(np.prod(shape))
    return jax.make_mesh(
        shape, names, axis_types=(AxisType.Auto,) * len(shape), devices=jax.devices()[:n]
    )


def tight_max_present(labels):
    """The smallest valid `max_present` of int8 labels `[B, K]`: the most `+1` of a row (>= 1)."""
    return max(1, int((labels == 1).sum(1).max()))


def jax_conditional(max_present, normalize="batch", beta=1.0):
    """`f(x, t, c, labels, scale, bias)`: the conditional loss at `UW` with these options."""

    def f(x, t, c, labels, scale, bias):
        return losses.conditional_sigmoid_loss(
            x, t, c, labels, scale=scale, bias=bias, unknown_weight=UW, max_present=max_present,
            normalize=normalize, cross_positive_weight=beta,
        )  # fmt: skip

    return f


def ref_conditional(x, t, c, labels, scale, bias, normalize="batch", beta=1.0):
    """The float64 reference of `jax_conditional`'s loss."""
    return ref.conditional_sigmoid_loss(x, t, c, labels, scale, bias, UW, beta, normalize)


def grads_f32(f, x, t, c, labels):
    """Value and gradients w.r.t. (x, t, c, scale, bias), jitted as a training step would be."""
    args = [jnp.asarray(a, jnp.float32) for a in (x, t, c)]
    fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 4, 5)))
    return fn(*args, jnp.asarray(labels), jnp.float32(SCALE), jnp.float32(BIAS))


def grads_f64(f, x, t, c, labels):
    """Float64 value and numeric gradients w.r.t. (x, t, c, scale, bias) at SCALE, BIAS."""
    value = f(x, t, c, labels, SCALE, BIAS)
    args = [x, t, c, labels, SCALE, BIAS]
    grads = [ref.numeric_grad(f, args, i) for i in (0, 1, 2, 4, 5)]
    return value, grads
