"""Sharding, memory and work scaling of `cclip_jax.losses` (8 fake CPU devices)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P
from jaxpr_cost import grad_matmul_flops

from cclip_jax import losses

SCALE, BIAS, UW = 3.0, -1.5, 0.7
MiB = 2**20


def _data(b, k, d, r, seed=0):
    """Embeddings and labels with exactly `r` present concepts per row, the rest -1/0."""
    rng = np.random.default_rng(seed)
    x, t, c = (rng.normal(size=s).astype(np.float32) for s in [(b, d), (b, d), (k, d)])
    labels = np.where(rng.random((b, k)) < 0.5, -1, 0).astype(np.int8)
    for row in labels:
        row[rng.choice(k, r, replace=False)] = 1
    return x, t, c, labels


def _loss(kind, axis_name=None):
    def f(x, t, c, labels, scale, bias):
        if kind == "sigmoid":
            return losses.sigmoid_loss(x, t, scale=scale, bias=bias, axis_name=axis_name)
        return losses.conditional_sigmoid_loss(
            x, t, c, labels, scale=scale, bias=bias, unknown_weight=UW, axis_name=axis_name,
            max_present=None if kind == "dense" else 3,
        )  # fmt: skip

    return f


def _mesh(shape, names):
    n = int(np.prod(shape))
    return jax.make_mesh(
        shape, names, axis_types=(AxisType.Auto,) * len(shape), devices=jax.devices()[:n]
    )


def _sharded(f, mesh, axis):
    specs = (P(axis), P(axis), P(), P(axis), P(), P())
    return jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P())


GRAD_ARGS = (0, 1, 2, 4, 5)


@pytest.mark.parametrize("kind", ["sigmoid", "dense", "sparse"])
def test_ring_sharded_equals_unsharded(kind):
    x, t, c, labels = _data(16, 5, 6, r=3)
    args = (x, t, c, labels, np.float32(SCALE), np.float32(BIAS))
    want_v, want_g = jax.jit(jax.value_and_grad(_loss(kind), argnums=GRAD_ARGS))(*args)
    for shape, names in [((2,), ("d",)), ((4,), ("d",)), ((8,), ("d",)), ((2, 2), ("a", "b"))]:
        axis = names if len(names) > 1 else names[0]
        f = _sharded(_loss(kind, axis), _mesh(shape, names), axis)
        v, g = jax.jit(jax.value_and_grad(f, argnums=GRAD_ARGS))(*args)
        np.testing.assert_allclose(v, want_v, rtol=2e-6, err_msg=f"mesh {shape}")
        for got, want in zip(g, want_g, strict=True):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=f"mesh {shape}")


def test_ring_gradient_of_gathered_concepts_is_not_double_counted():
    """Concepts all-gathered from per-device shares (device-varying) get local cotangents."""
    x, t, c, labels = _data(16, 8, 6, r=2, seed=1)
    args = (x, t, c, labels, np.float32(SCALE), np.float32(BIAS))
    want = jax.jit(jax.grad(_loss("sparse"), argnums=2))(*args)
    mesh = _mesh((4,), ("d",))

    def f(x, t, c_share, labels, scale, bias):
        c = jax.lax.all_gather(c_share, "d", tiled=True)  # device-varying, not replicated
        return _loss("sparse", "d")(x, t, c, labels, scale, bias)

    specs = (P("d"), P("d"), P("d"), P("d"), P(), P())
    g = jax.jit(jax.grad(jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P()), argnums=2))
    np.testing.assert_allclose(g(*args), want, rtol=2e-5, atol=2e-6)


def _temp_bytes(f, *shapes):
    args = [jax.ShapeDtypeStruct(s, dt) for s, dt in shapes]
    compiled = jax.jit(jax.grad(f, argnums=(0, 1, 2))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def _shapes(b, k, d):
    f32 = jnp.float32
    return [((b, d), f32), ((b, d), f32), ((k, d), f32), ((b, k), jnp.int8)]


@pytest.mark.parametrize("max_present", [None, 8])
def test_compiled_memory_at_4096_is_bounded(max_present):
    b = k = 4096

    def f(x, t, c, labels):
        return losses.conditional_sigmoid_loss(
            x, t, c, labels, scale=10.0, bias=-10.0, max_present=max_present
        )

    temp = _temp_bytes(f, *_shapes(b, k, 256))
    assert temp <= 256 * MiB, f"{temp / MiB:.0f} MiB"
    assert temp < b * b * k * 4 / 64  # far from any [B, B, K] tensor


@pytest.mark.parametrize("max_present", [None, 8])
def test_per_device_memory_does_not_grow_with_devices(max_present):
    b, k, d = 256, 512, 256  # per-device batch fixed; global batch grows with the mesh

    def temp(n):
        def f(x, t, c, labels):
            return losses.conditional_sigmoid_loss(
                x, t, c, labels, scale=10.0, bias=-10.0, max_present=max_present, axis_name="d"
            )

        specs = (P("d"), P("d"), P(), P("d"))
        sharded = jax.shard_map(f, mesh=_mesh((n,), ("d",)), in_specs=specs, out_specs=P())
        return _temp_bytes(sharded, *_shapes(n * b, k, d))

    base, largest = temp(2), temp(8)
    # A ring that kept each visiting block for the backward pass would hold 6 more caption
    # blocks at 8 devices than at 2; allow less than one.
    assert largest - base < b * d * 4, (base / MiB, largest / MiB)


def test_sparse_work_follows_the_support_not_k():
    """At B=1024, D=128, R=4: matmul work at K=2048 is at most 1.5x that at K=128."""
    b, d, r = 1024, 128, 4

    def flops(k):
        def f(x, t, c, labels):
            return losses.conditional_sigmoid_loss(
                x, t, c, labels, scale=10.0, bias=-10.0, max_present=r
            )

        args = [jax.ShapeDtypeStruct(s, dt) for s, dt in _shapes(b, k, d)]
        return grad_matmul_flops(f, *args)

    small, large = flops(128), flops(2048)
    useful = 12 * (b * r) * b * d  # forward + backward of the two entry matmuls
    assert useful <= small  # the count is not missing the main products
    assert large <= 1.5 * small, (small, large)


def test_dense_work_grows_with_k():
    """The counter sees concept chunks: the dense path's work is linear in K."""

    def flops(k):
        def f(x, t, c, labels):
            return losses.conditional_sigmoid_loss(x, t, c, labels, scale=10.0, bias=-10.0)

        args = [jax.ShapeDtypeStruct(s, dt) for s, dt in _shapes(256, k, 32)]
        return grad_matmul_flops(f, *args)

    assert 7.5 < flops(64) / flops(8) <= 8.0


def test_import_is_standalone():
    code = (
        "import sys, cclip_jax.losses\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'flax', 'grain', 'orbax', 'tensorflow_datasets', 'optax', 'tensorflow', 'torch'}"
        " or (m.startswith('cclip_jax.') and not m.startswith('cclip_jax.losses'))]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"cclip_jax.losses imported: {out.stdout.strip()}"
