"""Building the towers and the two-tower model: sizes, parameter counts and names, config
and input checks, and the build options that must not change the numbers (scanned layers,
remat). Tiny sizes; big ones only through eval_shape. What the model computes is in
test_model_outputs.py."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_inputs import make_inputs, random_variables

from cclip_jax import models
from cclip_jax.models import layers


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def test_unknown_size_lists_known_sizes():
    with pytest.raises(ValueError, match=r"'XL'.*mu, Ti, S, M, B, L, So400m"):
        models.decode_variant("XL/16")
    cfg = models.get_default_model_config("mu")
    cfg.text.variant = "Q"
    with pytest.raises(ValueError, match=r"config.model.text.variant.*known sizes"):
        models.build_model(cfg)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("gate", "relu", r"config.model.gate='relu'.*identity"),
        ("dtype", "int8", r"config.model.dtype"),
        ("remat_policy", "some", r"config.model.remat_policy"),
    ],
)
def test_bad_config_names_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        models.build_model(models.get_default_model_config("mu"), **{field: value})


def test_sizes_match_big_vision_table():
    b16 = models.decode_variant("B/16")
    assert (b16.width, b16.depth, b16.mlp_dim, b16.num_heads, b16.patch_size) == (
        768,
        12,
        3072,
        12,
        16,
    )
    so = models.decode_variant("So400m/14")
    assert (so.width, so.depth, so.mlp_dim, so.num_heads, so.patch_size) == (1152, 27, 4304, 16, 14)


def test_b16_image_encoder_has_86m_parameters():
    # The published ViT-B/16 encoder (cls token, no head) has 86M parameters at 224 px.
    cfg = models.get_default_model_config("B")
    cfg.image.update(pool_type="tok", proj=False)
    cfg.scan_layers = True  # traces one block instead of twelve; the count is the same
    model = models.build_model(cfg)
    shapes = jax.eval_shape(
        lambda k: model.init(k, images=jnp.zeros((1, 224, 224, 3))), jax.random.key(0)
    )
    n_img = _count(nn.unbox(shapes)["params"]["img"])
    assert abs(n_img - 86e6) / 86e6 < 0.01, n_img
    # Exact value from the shapes: patch conv + posemb + cls + 12 blocks + final norm.
    block = 4 * 768 + 4 * (768 * 768 + 768) + 2 * 768 * 3072 + 3072 + 768
    assert n_img == 16 * 16 * 3 * 768 + 768 + 196 * 768 + 768 + 12 * block + 2 * 768


def test_image_size_not_a_multiple_of_patch_uses_the_floor_grid():
    # SigLIP So400m/14 at 384 px: VALID patches give a 27x27 grid, as in big_vision.
    cfg = models.siglip_config("So400m/14", 384)
    cfg.scan_layers = True  # one traced block per tower
    shapes = nn.unbox(models.build_model(cfg).abstract_params())["params"]
    assert shapes["img"]["pos_embedding"].shape == (1, 27 * 27, 1152)
    assert shapes["img"]["embedding"]["kernel"].shape == (14, 14, 3, 1152)


def test_every_parameter_has_logical_names():
    cfg = models.get_default_model_config("mu")
    cfg.scan_layers = True
    boxed = models.build_model(cfg).abstract_params()
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == leaf.value.ndim
    names = {n for leaf in leaves for n in leaf.names}
    assert {"embed", "mlp", "heads", "kv", "vocab", "layers"} <= names


def test_temperature_inits_from_config():
    model = models.build_model(
        models.get_default_model_config("mu"),
        temperature_init=5.0,
        bias_init=-3.0,
        cond_temperature_init=2.0,
        cond_bias_init=-1.0,
    )
    out = model.apply(nn.unbox(model.init(jax.random.key(0))))  # temperatures only
    np.testing.assert_allclose(
        [out.scale, out.bias, out.cond_scale, out.cond_bias], [5.0, -3.0, 2.0, -1.0], rtol=1e-6
    )
    assert out.image_emb is None and out.text_emb is None and out.concept_emb is None


def _stack_blocks(params: dict, depth: int) -> dict:
    """Unrolled `encoderblock_i` parameters -> scanned `encoderblock` (leading layer axis)."""
    out = {}
    for key, value in params.items():
        if key == "encoderblock_0":
            blocks = [params[f"encoderblock_{i}"] for i in range(depth)]
            out["encoderblock"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
        elif not key.startswith("encoderblock_"):
            out[key] = _stack_blocks(value, depth) if isinstance(value, dict) else value
    return out


def _two_block_config():
    cfg = models.get_default_model_config("mu")
    cfg.image.depth = cfg.text.depth = 2  # overrides the variant's depth of 1
    return cfg


def test_scan_matches_unrolled():
    cfg = _two_block_config()
    plain = models.build_model(cfg)
    scanned = models.build_model(cfg, scan_layers=True)
    variables = random_variables(plain, seed=2)
    x = make_inputs(plain, seed=3)
    del x["concepts"]  # same tower as the captions

    @jax.jit
    def both(v):
        v_scan = {"params": _stack_blocks(v["params"], 2)}
        return plain.apply(v, **x), scanned.apply(v_scan, **x)

    a, b = both(variables)
    for name in ("image_emb", "text_emb"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_scanned_remat_gradients_match_unrolled():
    cfg = _two_block_config()
    plain = models.build_model(cfg)
    fancy = models.build_model(cfg, scan_layers=True, remat_policy="dots_saveable")
    x = make_inputs(plain, seed=3)

    def loss(model, v):
        out = model.apply(v, images=x["images"], texts=x["texts"])
        return jnp.sum(out.image_emb * out.text_emb)

    @jax.jit
    def run(v):
        v_scan = {"params": _stack_blocks(v["params"], 2)}
        return (
            jax.value_and_grad(lambda p: loss(plain, p))(v),
            jax.value_and_grad(lambda p: loss(fancy, p))(v_scan),
        )

    (l1, g1), (l2, g2) = run(random_variables(plain, seed=4))
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    g1 = {"params": _stack_blocks(g1["params"], 2)}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(images=np.zeros((2, 64, 64, 3), np.float32)),
            ValueError,
            r"\[B, 32, 32, 3\].*got \(2, 64, 64, 3\)",
        ),
        (dict(images=np.zeros((2, 32, 32, 1), np.float32)), ValueError, r"\[B, 32, 32, 3\]"),
        (dict(images=np.zeros((2, 32, 32, 3), np.uint8)), TypeError, r"floating point"),
        (dict(texts=np.zeros((2, 16), np.float32)), TypeError, r"integer array \[B, L<=16\]"),
        (dict(texts=np.zeros((2, 17), np.int32)), ValueError, r"L <= max_len=16.*\(2, 17\)"),
        (dict(concepts=np.zeros((2,), np.int32)), ValueError, r"\[B, L\]"),
    ],
)
def test_bad_inputs_fail_at_trace_time(kwargs, error, match):
    model = models.build_model(models.get_default_model_config("mu"))
    abstract = nn.unbox(model.abstract_params())
    with pytest.raises(error, match=match):
        jax.eval_shape(lambda v: model.apply(v, **kwargs), abstract)


def test_remat_policy_unknown_lists_choices():
    with pytest.raises(ValueError, match="nothing_saveable"):
        models.build_model(models.get_default_model_config("mu"), remat_policy="all")


def test_tower_options_trace():
    # Every pooling/posemb option builds and gives [B, D] (shapes only: no compilation).
    for img_pool, posemb, txt_pool in [
        ("gap", "sincos2d", "first"),
        ("tok", "learn", "map"),
        ("map", "sincos2d", "gap"),
    ]:
        cfg = models.get_default_model_config("mu")
        cfg.image.update(pool_type=img_pool, posemb=posemb)
        cfg.text.pool_type = txt_pool
        cfg.embed_dim = 24
        model = models.build_model(cfg)
        out = jax.eval_shape(
            lambda k, m=model: m.init_with_output(k, **m.dummy_inputs(2))[0], jax.random.key(0)
        )
        assert out.image_emb.shape == (2, 24) and out.text_emb.shape == (2, 24)


def test_remat_policies_table_is_complete():
    assert layers.REMAT_POLICIES["none"] is None
    assert all(callable(p) for k, p in layers.REMAT_POLICIES.items() if k != "none")
