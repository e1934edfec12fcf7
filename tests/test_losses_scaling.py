"""Sharding, memory and work scaling of `cclip_jax.losses` (8 fake CPU devices)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jaxpr_cost import grad_matmul_flops
from loss_cases import cpu_mesh

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


# kind -> (loss, normalize, cross_positive_weight, max_present)
KINDS = {
    "sigmoid": ("sigmoid", None, None, None),
    "sigmoid_pair_ids": ("sigmoid", None, None, None),
    "softmax": ("softmax", None, None, None),
    "dense": ("conditional", "triples", 1.0, None),
    "dense_batch": ("conditional", "batch", 1.0, None),
    "dense_beta": ("conditional", "triples", 0.25, None),
    "sparse": ("conditional", "triples", 1.0, 3),
    "sparse_batch": ("conditional", "batch", 1.0, 3),
    "sparse_beta": ("conditional", "batch", 0.25, 3),
}
PAIR_IDS = np.array([0, 1, 0, 3, 4, 5, 3, 7, 8, 9, 1, 11, 12, 13, 14, 0], np.int32)


def _loss(kind, axis_name=None):
    loss, normalize, beta, max_present = KINDS[kind]

    def f(x, t, c, labels, scale, bias, ids):
        if loss == "sigmoid":
            ids = ids if kind == "sigmoid_pair_ids" else None
            return losses.sigmoid_loss(
                x, t, scale=scale, bias=bias, pair_ids=ids, axis_name=axis_name
            )
        if loss == "softmax":
            return losses.softmax_loss(x, t, scale=scale, axis_name=axis_name) + 0 * bias
        return losses.conditional_sigmoid_loss(
            x, t, c, labels, scale=scale, bias=bias, unknown_weight=UW, axis_name=axis_name,
            max_present=max_present, normalize=normalize, cross_positive_weight=beta,
        )  # fmt: skip

    return f


def _reference(kind, x, t, c, labels, scale, bias):
    loss, normalize, beta, _ = KINDS[kind]
    if loss == "sigmoid":
        return ref.sigmoid_loss(x, t, scale, bias, PAIR_IDS if kind == "sigmoid_pair_ids" else None)
    if loss == "softmax":
        return ref.softmax_loss(x, t, scale)
    return ref.conditional_sigmoid_loss(x, t, c, labels, scale, bias, UW, beta, normalize)


def _sharded(f, mesh, axis):
    specs = (P(axis), P(axis), P(), P(axis), P(), P(), P(axis))
    return jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P())


GRAD_ARGS = (0, 1, 2, 4, 5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ring_sharded_matches_float64_reference(kind):
    """Value and gradients on 1, 2, 4 and 8 devices (and a 2 x 2 mesh) against float64."""
    x, t, c, labels = _data(16, 5, 6, r=3)
    args = (x, t, c, labels, np.float32(SCALE), np.float32(BIAS), PAIR_IDS)
    f_ref = lambda *a: _reference(kind, *a)
    ref_args = [x, t, c, labels, SCALE, BIAS]
    want_v = f_ref(*ref_args)
    want_g = [ref.numeric_grad(f_ref, ref_args, i) for i in GRAD_ARGS]
    meshes = [((1,), ("d",)), ((2,), ("d",)), ((4,), ("d",)), ((8,), ("d",)),
              ((2, 2), ("a", "b"))]  # fmt: skip
    for shape, names in meshes:
        axis = names if len(names) > 1 else names[0]
        f = _sharded(_loss(kind, axis), cpu_mesh(shape, names), axis)
        v, g = jax.jit(jax.value_and_grad(f, argnums=GRAD_ARGS))(*args)
        np.testing.assert_allclose(v, want_v, rtol=2e-5, err_msg=f"mesh {shape}")
        for got, want in zip(g, want_g, strict=True):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, err_msg=f"mesh {shape}")


def test_ring_gradient_of_gathered_concepts_is_not_double_counted():
    """Concepts all-gathered from per-device shares (device-varying) get local cotangents."""
    x, t, c, labels = _data(16, 8, 6, r=2, seed=1)
    args = (x, t, c, labels, np.float32(SCALE), np.float32(BIAS), PAIR_IDS)
    want = jax.jit(jax.grad(_loss("sparse_beta"), argnums=2))(*args)
    mesh = cpu_mesh((4,), ("d",))

    def f(x, t, c_share, labels, scale, bias, ids):
        c = jax.lax.all_gather(c_share, "d", tiled=True)  # device-varying, not replicated
        return _loss("sparse_beta", "d")(x, t, c, labels, scale, bias, ids)

    specs = (P("d"), P("d"), P("d"), P("d"), P(), P(), P("d"))
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
        sharded = jax.shard_map(f, mesh=cpu_mesh((n,), ("d",)), in_specs=specs, out_specs=P())
        return _temp_bytes(sharded, *_shapes(n * b, k, d))

    base, largest = temp(2), temp(8)
    # A ring that kept each visiting block for the backward pass would hold 6 more caption
    # blocks at 8 devices than at 2; allow less than one.
    assert largest - base < b * d * 4, (base / MiB, largest / MiB)


def test_sparse_work_follows_the_support_not_k():
    """At B=1024, D=128, R=4 (B·R = 4096 entries), matmul work is the entry products'
    `12·B·R·B·D` plus the tile norms': a `[K, 2c]` table, `12·K·B·D`, while K ≤ B·R, and per
    entry, `12·B·R·B·D`, beyond. So it grows with K only up to K = B·R (at most 2x), then not
    at all: K=2048 is ≤ 1.46x K=128, and K=16384 does no more work than K=4096."""
    b, d, r = 1024, 128, 4

    def flops(k):
        def f(x, t, c, labels):
            return losses.conditional_sigmoid_loss(
                x, t, c, labels, scale=10.0, bias=-10.0, max_present=r
            )

        args = [jax.ShapeDtypeStruct(s, dt) for s, dt in _shapes(b, k, d)]
        return grad_matmul_flops(f, *args)

    useful = 12 * (b * r) * b * d  # forward + backward of the two entry matmuls
    work = {k: flops(k) for k in (128, 2048, 4096, 16384)}
    assert useful <= work[128]  # the count is not missing the main products
    for k, got in work.items():
        assert got <= 1.01 * (useful + 12 * min(k, b * r) * b * d), (k, got / useful)
    assert work[2048] <= 1.46 * work[128], work
    assert work[16384] <= work[4096], work


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
