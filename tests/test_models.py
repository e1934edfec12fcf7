"""Tests of the towers and the two-tower model (tiny sizes; big ones only through eval_shape)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cclip_jax import models
from cclip_jax.models import layers

B, K = 4, 3


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def make_inputs(model: models.TwoTower, seed: int = 0, batch: int = B, concepts: int = K):
    """Random images `[B, S, S, 3]`, right-padded captions `[B, L]`, concepts `[K, L]`."""
    rng = np.random.default_rng(seed)
    s = model.image["image_size"]
    length = model.text["max_len"]
    vocab = model.text["vocab_size"]

    def tokens(n: int) -> np.ndarray:
        ids = rng.integers(2, vocab, size=(n, length))
        lengths = rng.integers(1, length + 1, size=n)
        return np.where(np.arange(length)[None] < lengths[:, None], ids, 0).astype(np.int32)

    images = rng.uniform(-1, 1, size=(batch, s, s, 3)).astype(np.float32)
    return dict(images=images, texts=tokens(batch), concepts=tokens(concepts))


def random_variables(model: models.TwoTower, seed: int = 0) -> dict:
    """Random variables of `model`'s shapes, drawn with numpy.

    Why not `model.init`: on a CPU, compiling the threefry draws of every initializer costs
    seconds per model, while these tests only need generic, well-scaled weights (the real
    initialisation runs in the sharding tests and the temperature test).
    """
    rng = np.random.default_rng(seed)
    temperatures = {"t": np.log(10.0), "cond_t": np.log(10.0), "b": -10.0, "cond_b": -10.0}

    def draw(path, leaf):
        name = path[-1].key
        if name in temperatures:
            return jnp.asarray(temperatures[name], leaf.dtype)
        if name == "scale":  # LayerNorm
            return jnp.asarray(1 + 0.1 * rng.standard_normal(leaf.shape), leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1]) if leaf.ndim > 1 and name != "embedding" else 1
        std = 0.02 if fan_in == 1 else fan_in**-0.5
        return jnp.asarray(std * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, nn.unbox(model.abstract_params()))


@pytest.fixture(scope="module")
def mu():
    """A `mu` model with random variables, shared by the module."""
    model = models.build_model(models.get_default_model_config("mu"))
    return model, random_variables(model)


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


def test_output_shapes_and_temperature_init(mu):
    model, variables = mu
    out = jax.jit(lambda v, x: model.apply(v, **x))(variables, make_inputs(model))
    d = 32
    assert out.image_emb.shape == (B, d) and out.image_emb.dtype == jnp.float32
    assert out.text_emb.shape == (B, d)
    assert out.concept_emb.shape == (K, d)
    assert out["image_emb"] is out.image_emb
    np.testing.assert_allclose([out.scale, out.bias], [10.0, -10.0], rtol=1e-6)
    np.testing.assert_allclose([out.cond_scale, out.cond_bias], [10.0, -10.0], rtol=1e-6)
    for emb in (out.image_emb, out.text_emb, out.concept_emb):
        assert np.all(np.isfinite(emb))
        # Not normalised: the loss does that.
        assert not np.allclose(np.linalg.norm(emb, axis=-1), 1.0)
    # Different captions, different embeddings.
    assert not np.allclose(out.text_emb[0], out.text_emb[1])


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


def test_text_padding_does_not_change_embeddings(mu):
    model, variables = mu
    rng = np.random.default_rng(1)
    lengths = np.array([1, 3, 7, 10])
    ids = rng.integers(2, 1024, size=(B, 10))
    short = np.where(np.arange(10)[None] < lengths[:, None], ids, 0).astype(np.int32)
    long = np.pad(short, ((0, 0), (0, 6)))  # the same captions with six more pad tokens

    @jax.jit
    def embed(v, a, b):
        return model.apply(v, texts=a).text_emb, model.apply(v, texts=b).text_emb

    e_short, e_long = embed(variables, short, long)
    np.testing.assert_allclose(e_short, e_long, atol=1e-5)
    # The check can fail: a non-pad token in the tail does change the embedding.
    changed = long.copy()
    changed[:, 12] = 5
    _, e_changed = embed(variables, short, changed)
    assert not np.allclose(e_short, e_changed, atol=1e-3)


def test_gates_transform_concepts(mu):
    model, variables = mu
    x = make_inputs(model)
    soft = model.clone(gate="softplus")
    sig = model.clone(gate="sigmoid")
    ones = model.clone(gate="ones")

    @jax.jit
    def concepts(v, c):
        return tuple(m.apply(v, concepts=c).concept_emb for m in (model, soft, sig, ones))

    ident, sp, sg, one = concepts(variables, x["concepts"])
    np.testing.assert_allclose(sp, jax.nn.softplus(ident), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sg, jax.nn.sigmoid(ident), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one, np.ones_like(ident))  # the no-gating control


@pytest.mark.parametrize("groups", [1, 2])
def test_captions_and_concepts_in_one_call_equal_separate_calls(mu, groups):
    model, variables = mu
    x = make_inputs(model, batch=4, concepts=6)

    @jax.jit
    def embed(v, inputs):
        both = model.apply(v, texts=inputs["texts"], concepts=inputs["concepts"],
                           text_groups=groups)
        alone = (model.apply(v, texts=inputs["texts"]).text_emb,
                 model.apply(v, concepts=inputs["concepts"]).concept_emb)
        return (both.text_emb, both.concept_emb), alone

    (text_emb, concept_emb), (text_alone, concept_alone) = embed(variables, x)
    np.testing.assert_allclose(text_emb, text_alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(concept_emb, concept_alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="text_groups=4 must divide"):
        model.apply(variables, texts=x["texts"], concepts=x["concepts"], text_groups=4)


def test_bfloat16_close_to_float32(mu):
    model, variables = mu
    x = make_inputs(model)
    del x["concepts"]  # they run through the same text tower as the captions
    bf16 = models.build_model(models.get_default_model_config("mu"), dtype="bfloat16")

    @jax.jit
    def both(v):
        return model.apply(v, **x), bf16.apply(v, **x)

    f32, b16 = both(variables)
    for name in ("image_emb", "text_emb"):
        a, b = np.asarray(f32[name]), np.asarray(b16[name])
        assert b.dtype == np.float32  # embeddings come back in float32 for the loss
        cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        assert np.all(cos > 0.995), (name, cos)
        assert not np.array_equal(a, b)  # bf16 really ran


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


# Pinned outputs of `test_fixed_outputs_are_pinned`, computed once from the code of 2026-12-02
# (image_emb[:, :4] then text_emb[:, :4], row-major).
_PINNED = np.array([
    0.8304613, -0.8273387, -0.88559496, -0.96456444, 0.87988645, -0.81757915, -0.81836885,
    -0.91878706, 1.9035946, 1.0338519, -1.044044, -1.9314622, 1.9466548, 0.8290106,
    -1.5790975, -1.6750466,
], np.float32)


def test_fixed_outputs_are_pinned():
    """A regression pin: fixed numpy weights and inputs -> stored output values.

    Catches numeric drift that every comparison of one path against another misses, e.g.
    the LayerNorm epsilon (big_vision's 1e-6): the position embeddings are scaled down and the
    images are faint, so the first LayerNorms see a variance of ~2e-4, and epsilon 1e-5 moves
    every pinned value by 4e-4 to 1e-2 relative (checked), 40x the tolerance. If a change is
    meant to move these numbers, recompute them and say why in the commit.
    """
    model = models.build_model(models.get_default_model_config("mu"))
    variables = random_variables(model, seed=7)
    for tower in ("txt", "img"):
        pos = variables["params"][tower]["pos_embedding"]
        variables["params"][tower]["pos_embedding"] = pos * 0.05
    rng = np.random.default_rng(7)
    images = (0.01 * rng.uniform(-1, 1, (2, 32, 32, 3))).astype(np.float32)
    texts = np.zeros((2, 16), np.int32)
    texts[0, :5] = [5, 17, 99, 3, 1000]
    texts[1, :9] = rng.integers(2, 1024, 9)
    out = jax.jit(lambda v, i, t: model.apply(v, images=i, texts=t))(variables, images, texts)
    got = np.concatenate([np.asarray(out.image_emb)[:, :4].ravel(),
                          np.asarray(out.text_emb)[:, :4].ravel()])
    np.testing.assert_allclose(got, _PINNED, rtol=1e-5, atol=0)


@pytest.mark.parametrize("mask_padding", [True, False])
@pytest.mark.parametrize("pool_type", ["last", "first", "gap", "map"])
def test_text_embedding_pools_the_configured_tokens(pool_type, mask_padding):
    """The caption embedding is `head(pool(h))` of the tower's final hidden states `h`, with the
    pooling `config.model.text.pool_type` names: `last` reads the last real token (with
    `mask_padding`) or position L-1 (without), `first` position 0, `gap` the mean over real
    tokens (or all), `map` the MAP head over them. Shapes alone would not tell these apart."""
    cfg = models.get_default_model_config("mu")
    cfg.text.update(pool_type=pool_type, mask_padding=mask_padding)
    model = models.build_model(cfg)
    variables = random_variables(model, seed=3)
    rng = np.random.default_rng(3)
    lengths = np.array([2, 5, 9, 16])  # never 1: a 1-token caption's first token is its last
    ids = rng.integers(2, 1024, size=(4, 16))
    texts = np.where(np.arange(16)[None] < lengths[:, None], ids, 0).astype(np.int32)

    @jax.jit
    def run(v, t):
        return model.apply(v, texts=t, capture_intermediates=lambda m, _: isinstance(
            m, layers.Encoder))

    out, state = run(variables, texts)
    (h,) = state["intermediates"]["txt"]["Encoder_0"]["__call__"]  # [B, L, width]
    h = np.asarray(h, np.float64)
    mask = texts != 0 if mask_padding else np.ones(texts.shape, bool)
    txt = variables["params"]["txt"]
    if pool_type == "last":
        pooled = h[np.arange(4), lengths - 1] if mask_padding else h[:, -1]
    elif pool_type == "first":
        pooled = h[:, 0]
    elif pool_type == "gap":
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    else:
        head = layers.MAPHead(model.text["mlp_dim"], model.text["num_heads"])
        pooled = np.asarray(head.apply({"params": txt["MAPHead_0"]}, jnp.asarray(h, jnp.float32),
                                       jnp.asarray(texts != 0) if mask_padding else None))
    want = pooled @ np.asarray(txt["head"]["kernel"]) + np.asarray(txt["head"]["bias"])
    np.testing.assert_allclose(out.text_emb, want, rtol=1e-4, atol=1e-5)
    # The pooled rows really differ by position, so reading another one would fail above.
    assert not np.allclose(h[np.arange(4), lengths - 1], h[:, 0], atol=1e-2)
