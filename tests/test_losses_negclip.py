"""NegCLIP hard negatives in `softmax_loss` and `sigmoid_loss`: float64 references, gradients,
invalid rows, and sharded on 1/2/4/8 fake devices (and a 2 x 2 mesh)."""

import jax
import jax.numpy as jnp
import loss_reference as ref
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from loss_cases import cpu_mesh

from cclip_jax import losses

SCALE, BIAS = 3.0, -1.5
B, D = 16, 6
VALID = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0], np.int8)
PAIR_IDS = np.array([0, 1, 0, 3, 4, 5, 3, 7, 8, 9, 1, 11, 12, 13, 14, 0], np.int32)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x, t = (rng.normal(size=(B, D)).astype(np.float32) for _ in range(2))
    h = (t + 0.5 * rng.normal(size=(B, D))).astype(np.float32)  # near its caption: hard
    return x, t, h


def _loss(kind, axis_name=None):
    def f(x, t, h, valid, scale, bias, ids):
        if kind == "softmax":
            return (
                losses.softmax_loss(
                    x, t, scale=scale, axis_name=axis_name, hard_text_emb=h, hard_valid=valid
                )
                + 0 * bias
            )
        return losses.sigmoid_loss(
            x,
            t,
            scale=scale,
            bias=bias,
            axis_name=axis_name,
            pair_ids=ids if kind == "sigmoid_pair_ids" else None,
            hard_text_emb=h,
            hard_valid=valid,
        )

    return f


def _reference(kind, valid):
    if kind == "softmax":
        return lambda x, t, h, scale, bias: ref.softmax_loss_negclip(x, t, h, valid, scale)
    ids = PAIR_IDS if kind == "sigmoid_pair_ids" else None
    return lambda x, t, h, scale, bias: ref.sigmoid_loss_negclip(x, t, h, valid, scale, bias, ids)


GRAD_ARGS = (0, 1, 2, 4, 5)  # x, t, h, scale, bias
KINDS = ("softmax", "sigmoid", "sigmoid_pair_ids")
MESHES = [((1,), ("d",)), ((2,), ("d",)), ((4,), ("d",)), ((8,), ("d",)), ((2, 2), ("a", "b"))]


def test_references_reduce_to_the_plain_losses():
    x, t, h = _data()
    none = np.zeros(B, bool)
    np.testing.assert_allclose(
        ref.softmax_loss_negclip(x, t, h, none, SCALE), ref.softmax_loss(x, t, SCALE), rtol=1e-12
    )
    np.testing.assert_allclose(
        ref.sigmoid_loss_negclip(x, t, h, none, SCALE, BIAS),
        ref.sigmoid_loss(x, t, SCALE, BIAS),
        rtol=1e-12,
    )
    # One valid row, by hand: softmax row i gains exp(z_ih) in its denominator for every i.
    one = np.eye(B, dtype=bool)[3]
    z = SCALE * ref._cos(np.float64(x), np.float64(t))
    zh = SCALE * ref._cos(np.float64(x), np.float64(h))[:, 3]
    lse = np.log(np.exp(z).sum(1) + np.exp(zh))
    i2t = np.mean(lse - np.diag(z))
    t2i = np.mean(np.log(np.exp(z).sum(0)) - np.diag(z))
    np.testing.assert_allclose(
        ref.softmax_loss_negclip(x, t, h, one, SCALE), (i2t + t2i) / 2, rtol=1e-12
    )


@pytest.mark.parametrize("kind", KINDS)
def test_value_and_gradients_match_float64_sharded(kind):
    """Value and gradients (x, t, hard negatives, scale, bias) on 1, 2, 4 and 8 devices and a
    2 x 2 mesh against the float64 reference."""
    x, t, h = _data()
    args = (x, t, h, VALID, np.float32(SCALE), np.float32(BIAS), PAIR_IDS)
    f_ref = _reference(kind, VALID)
    ref_args = [x, t, h, SCALE, BIAS]
    want_v = f_ref(*ref_args)
    want_g = [ref.numeric_grad(f_ref, ref_args, i) for i in range(5)]
    # Unsharded first.
    v, g = jax.jit(jax.value_and_grad(_loss(kind), argnums=GRAD_ARGS))(*args)
    np.testing.assert_allclose(v, want_v, rtol=2e-5)
    for got, want in zip(g, want_g, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    for shape, names in MESHES:
        axis = names if len(names) > 1 else names[0]
        specs = (P(axis), P(axis), P(axis), P(axis), P(), P(), P(axis))
        f = jax.shard_map(
            _loss(kind, axis), mesh=cpu_mesh(shape, names), in_specs=specs, out_specs=P()
        )
        v, g = jax.jit(jax.value_and_grad(f, argnums=GRAD_ARGS))(*args)
        np.testing.assert_allclose(v, want_v, rtol=2e-5, err_msg=f"mesh {shape}")
        for got, want in zip(g, want_g, strict=True):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, err_msg=f"mesh {shape}")


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_rows_contribute_nothing(kind):
    x, t, h = _data(1)
    args = (x, t, h, VALID, np.float32(SCALE), np.float32(BIAS), PAIR_IDS)
    f = jax.jit(jax.value_and_grad(_loss(kind), argnums=2))
    v, g_h = f(*args)
    invalid = VALID == 0
    np.testing.assert_array_equal(np.asarray(g_h)[invalid], 0.0)
    assert np.all(np.abs(np.asarray(g_h)[~invalid]).sum(1) > 0)
    # Anything (even NaN-free garbage of any size) in the invalid rows: the same loss.
    h2 = h.copy()
    h2[invalid] = 1e3 * np.random.default_rng(5).normal(size=(invalid.sum(), D))
    v2, _ = f(x, t, h2, *args[3:])
    np.testing.assert_allclose(v2, v, rtol=1e-6)
    # No valid row: exactly today's loss; all valid: hard_valid=None, bool or int alike.
    none = np.zeros(B, np.int8)
    plain = (
        losses.softmax_loss(x, t, scale=SCALE)
        if kind == "softmax"
        else losses.sigmoid_loss(
            x, t, scale=SCALE, bias=BIAS, pair_ids=PAIR_IDS if kind == "sigmoid_pair_ids" else None
        )
    )
    np.testing.assert_allclose(_loss(kind)(x, t, h, none, SCALE, BIAS, PAIR_IDS), plain, rtol=1e-6)
    all_valid = [
        _loss(kind)(x, t, h, valid, SCALE, BIAS, PAIR_IDS)
        for valid in (None, np.ones(B, bool), np.ones(B, np.int32))
    ]
    np.testing.assert_allclose(all_valid, all_valid[0], rtol=1e-6)
    assert float(all_valid[0]) > float(plain)  # every added term is positive


def test_hard_negatives_add_the_expected_pressure():
    """A hard negative equal to the image's own caption costs exactly as much as the caption
    scores (softmax: one more copy of the target in the denominator)."""
    x, t, _ = _data(2)
    got = losses.softmax_loss(x, t, scale=SCALE, hard_text_emb=t)
    z = SCALE * ref._cos(np.float64(x), np.float64(t))
    lse = np.log(np.exp(z).sum(1) + np.exp(z).sum(1))  # each caption twice in the rows
    i2t = np.mean(lse - np.diag(z))
    t2i = np.mean(np.log(np.exp(z).sum(0)) - np.diag(z))
    np.testing.assert_allclose(got, (i2t + t2i) / 2, rtol=1e-5)
    np.testing.assert_allclose(got, ref.softmax_loss(x, t, SCALE) + np.log(2) / 2, rtol=1e-5)


def test_bad_hard_inputs_are_named():
    x, t, h = _data()
    with pytest.raises(ValueError, match="hard_text_emb must be"):
        losses.softmax_loss(x, t, scale=1.0, hard_text_emb=h[:4])
    with pytest.raises(ValueError, match="hard_valid must be"):
        losses.sigmoid_loss(
            x, t, scale=1.0, bias=0.0, hard_text_emb=h, hard_valid=jnp.ones(B, jnp.float32)
        )
    for fn in (
        lambda: losses.softmax_loss(x, t, scale=1.0, hard_valid=VALID),
        lambda: losses.sigmoid_loss(x, t, scale=1.0, bias=0.0, hard_valid=VALID),
    ):
        with pytest.raises(ValueError, match="hard_valid without hard_text_emb"):
            fn()
