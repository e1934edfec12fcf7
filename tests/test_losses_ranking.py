"""`conditional_ranking_loss` against its float64 reference: values, gradients, sharding."""

import functools
import inspect

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
from loss_cases import cpu_mesh, random_case

from cclip_jax import losses

SCALE, UW = 3.0, 0.7
GRAD_ARGS = (0, 1, 2, 4, 5)  # x, t, c, scale, unknown_weight
MiB = 2**20


CASES = {
    "b6_k4": random_case(6, 4, 5),
    "k1": random_case(5, 1, 3, seed=1, p=(0.2, 0.2, 0.6)),
    "b8_k11_sparse_rows": random_case(8, 11, 4, seed=2, no_present_rows=(0, 3), unknown_cols=(5,)),
    "b4_k9_all_unknown_cols": random_case(4, 9, 6, seed=3, unknown_cols=(0, 1, 2)),
    "b7_k5_zero_concepts_odd_labels": random_case(
        7, 5, 4, seed=4, zero_concepts=(1, 3), odd_labels=True
    ),
}


def _loss(axis_name=None):
    def f(x, t, c, labels, scale, uw):
        return losses.conditional_ranking_loss(
            x, t, c, labels, scale=scale, unknown_weight=uw, axis_name=axis_name
        )

    return f


def _ref(x, t, c, labels, scale, uw):
    return ref.conditional_ranking_loss(x, t, c, labels, scale, uw)


_VALUE_AND_GRAD = jax.jit(jax.value_and_grad(_loss(), argnums=GRAD_ARGS))


def _f32_args(x, t, c, labels, scale=SCALE, uw=UW):
    return (*(jnp.float32(a) for a in (x, t, c)), jnp.asarray(labels), jnp.float32(scale),
            jnp.float32(uw))  # fmt: skip


def _want(x, t, c, labels, scale=SCALE, uw=UW):
    args = [x, t, c, labels, scale, uw]
    return _ref(*args), [ref.numeric_grad(_ref, args, i) for i in GRAD_ARGS]


def _check(got_value, got_grads, want_value, want_grads, rtol=2e-4, msg=""):
    np.testing.assert_allclose(got_value, want_value, rtol=2e-5, err_msg=msg)
    for got, want in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=2e-5, err_msg=msg)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_float64_reference(name):
    x, t, c, labels = CASES[name]
    assert (labels == 1).any()
    value, grads = _VALUE_AND_GRAD(*_f32_args(x, t, c, labels))
    _check(value, grads, *_want(x, t, c, labels))


# No zero concepts here: the ε of the cosine makes a zero gate a kink (its cosines jump from 0
# as the gate leaves 0), which a joint perturbation of gates and embeddings sees.
@pytest.mark.parametrize(
    "case", [CASES["b8_k11_sparse_rows"], random_case(7, 5, 4, seed=4, odd_labels=True)]
)
def test_check_grads_in_float64(case):
    x, t, c, labels = case
    with jax.enable_x64(True):
        f = functools.partial(_loss(), labels=jnp.asarray(labels))
        g = jax.jit(lambda x, t, c, s, uw: f(x, t, c, scale=s, uw=uw))
        args = [jnp.asarray(a, jnp.float64) for a in (x, t, c, SCALE, UW)]
        assert g(*args).dtype == jnp.float64
        np.testing.assert_allclose(g(*args), _ref(x, t, c, labels, SCALE, UW), rtol=1e-12)
        check_grads(g, args, order=1, modes=["rev"], eps=1e-6)


def test_batch_without_positives_is_zero_with_zero_gradients():
    x, t, c, _ = random_case(6, 4, 5, seed=11)
    rng = np.random.default_rng(0)
    for labels in (np.zeros((6, 4), np.int8), np.full((6, 4), -1, np.int8),
                   rng.choice([-1, 0, 2], size=(6, 4)).astype(np.int8)):  # fmt: skip
        value, grads = _VALUE_AND_GRAD(*_f32_args(x, t, c, labels))
        assert float(value) == 0.0
        for g in grads:
            np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("scale", [3.0, 60.0, -5.0])
def test_uniform_cosines_give_the_log_count_ratio(scale):
    """Every image and caption the same vector: each cosine is 1, every logit `scale`, and each
    entry's loss is `log((P_k + N_k + uw·U_k) / P_k)` from its column's counts alone."""
    assert "bias" not in inspect.signature(losses.conditional_ranking_loss).parameters
    _, _, c, labels = random_case(9, 6, 5, seed=5, odd_labels=True)
    labels[:, 2] = np.where(labels[:, 2] == 1, -1, labels[:, 2])  # a column without +1
    v = np.random.default_rng(1).normal(size=5)
    x = t = np.tile(v, (9, 1))
    p, n, u = ((labels == s).sum(0) for s in (1, -1, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_entry = np.where(p > 0, np.log((p + n + UW * u) / p), 0.0)
    want = (p * per_entry).sum() / p.sum()
    got, _ = _VALUE_AND_GRAD(*_f32_args(x, t, c, labels, scale=scale))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(_ref(x, t, c, labels, scale, UW), want, rtol=1e-12)


def test_large_scale_stays_exact():
    """Scale 100 with each image's own caption pointing away (cosine ≈ -1) and few positives:
    entry losses near 2·scale. A fixed shift by `scale` would underflow its numerators in
    float32 (e^-190); the running log-sum-exps do not."""
    x, t, c, labels = random_case(6, 3, 4, seed=6, p=(0.5, 0.3, 0.2))
    t = -x + 0.05 * np.random.default_rng(2).normal(size=x.shape)
    c = np.abs(c) + 0.5
    value, grads = _VALUE_AND_GRAD(*_f32_args(x, t, c, labels, scale=100.0))
    want_value, want_grads = _want(x, t, c, labels, scale=100.0)
    assert want_value > 50
    np.testing.assert_allclose(value, want_value, rtol=2e-5)
    for got, want in zip(grads, want_grads, strict=True):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


def _sharded(mesh, axis):
    specs = (P(axis), P(axis), P(), P(axis), P(), P())
    return jax.shard_map(_loss(axis), mesh=mesh, in_specs=specs, out_specs=P())


def test_ring_sharded_matches_float64_reference():
    """Value and gradients on 1, 2, 4 and 8 devices (and a 2 x 2 mesh) against float64."""
    x, t, c, labels = random_case(16, 5, 6, seed=7, no_present_rows=(2, 9), odd_labels=True)
    want = _want(x, t, c, labels)
    meshes = [((1,), ("d",)), ((2,), ("d",)), ((4,), ("d",)), ((8,), ("d",)),
              ((2, 2), ("a", "b"))]  # fmt: skip
    for shape, names in meshes:
        axis = names if len(names) > 1 else names[0]
        f = jax.jit(jax.value_and_grad(_sharded(cpu_mesh(shape, names), axis), argnums=GRAD_ARGS))
        _check(*f(*_f32_args(x, t, c, labels)), *want, msg=f"mesh {shape}")


def test_tiles_and_padded_concept_chunks_match_reference(monkeypatch):
    """A 84-element tile budget at 14 rows a device: 7 caption tiles of 2 rows, 3 concept
    chunks of 3 (7 concepts, 2 padding), unsharded and on a ring of 2 devices."""
    monkeypatch.setattr(losses._engine, "TILE_ELEMENTS", 84)
    for b, shape in ((14, None), (28, (2,))):
        x, t, c, labels = random_case(b, 7, 3, seed=8)
        f = _loss() if shape is None else _sharded(cpu_mesh(shape, ("d",)), "d")
        got = jax.jit(jax.value_and_grad(f, argnums=GRAD_ARGS))(*_f32_args(x, t, c, labels))
        _check(*got, *_want(x, t, c, labels), msg=f"B={b}")


def test_compiled_memory_is_far_from_a_logit_tensor():
    """B = K = 1024: the gradient's temporaries are a few tiles and `[B, K]` tables."""
    b = k = 1024
    shapes = [((b, 64), jnp.float32), ((b, 64), jnp.float32), ((k, 64), jnp.float32),
              ((b, k), jnp.int8)]  # fmt: skip
    args = [jax.ShapeDtypeStruct(s, dt) for s, dt in shapes]
    f = lambda x, t, c, labels: losses.conditional_ranking_loss(x, t, c, labels, scale=10.0)
    compiled = jax.jit(jax.grad(f, argnums=(0, 1, 2))).lower(*args).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp <= 192 * MiB, f"{temp / MiB:.0f} MiB"  # 117 MiB when written
    assert temp < b * b * k * 4 / 16  # far from any [B, B, K] tensor


@pytest.mark.slow
def test_per_device_memory_does_not_grow_with_devices():
    """Per-device batch fixed, global batch growing with the mesh: neither pass keeps visiting
    blocks (pass 1 takes no gradient, pass 2 is the engine's ring)."""
    b, k, d = 256, 512, 256

    def temp(n):
        specs = (P("d"), P("d"), P(), P("d"))
        f = lambda x, t, c, labels: losses.conditional_ranking_loss(
            x, t, c, labels, scale=10.0, axis_name="d"
        )
        sharded = jax.shard_map(f, mesh=cpu_mesh((n,), ("d",)), in_specs=specs, out_specs=P())
        shapes = [((n * b, d), jnp.float32), ((n * b, d), jnp.float32), ((k, d), jnp.float32),
                  ((n * b, k), jnp.int8)]  # fmt: skip
        args = [jax.ShapeDtypeStruct(s, dt) for s, dt in shapes]
        compiled = jax.jit(jax.grad(sharded, argnums=(0, 1, 2))).lower(*args).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    base, largest = temp(2), temp(8)
    # Keeping each visiting caption block would add 6 blocks at 8 devices; allow less than one.
    assert largest - base < b * d * 4, (base / MiB, largest / MiB)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_emb": np.zeros((5, 4))}, "image_emb and text_emb"),
        ({"concept_emb": np.zeros((3, 5))}, "concept_emb must be"),
        ({"concept_labels": np.zeros((6, 4), np.int8)}, "concept_labels must be"),
        ({"concept_labels": np.zeros((6, 3), np.float32)}, "must be integer"),
        ({"scale": np.ones(2)}, "scale must be a scalar"),
        ({"axis_name": "data"}, "not split over that mesh axis"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message):
    args = {"image_emb": np.zeros((6, 4)), "text_emb": np.zeros((6, 4)),
            "concept_emb": np.zeros((3, 4)), "concept_labels": np.zeros((6, 3), np.int8),
            "scale": 1.0}  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        losses.conditional_ranking_loss(
            **{k: v if isinstance(v, str) else jnp.asarray(v) for k, v in args.items()}
        )
