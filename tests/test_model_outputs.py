"""What the two-tower model computes (a `mu` model with random weights): output shapes and
temperatures, padding-invariant captions, concept gates, captions and concepts in one call,
bfloat16, the caption pooling, and pinned output values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_inputs import B, K, make_inputs, random_variables

from cclip_jax import models
from cclip_jax.models import layers


@pytest.fixture(scope="module")
def mu():
    """A `mu` model with random variables, shared by the module."""
    model = models.build_model(models.get_default_model_config("mu"))
    return model, random_variables(model)


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
        both = model.apply(
            v, texts=inputs["texts"], concepts=inputs["concepts"], text_groups=groups
        )
        alone = (
            model.apply(v, texts=inputs["texts"]).text_emb,
            model.apply(v, concepts=inputs["concepts"]).concept_emb,
        )
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


# Pinned outputs of `test_fixed_outputs_are_pinned`, computed once from the code of 2026-12-02
# (image_emb[:, :4] then text_emb[:, :4], row-major).
_PINNED = np.array(
    [
        0.8304613,
        -0.8273387,
        -0.88559496,
        -0.96456444,
        0.87988645,
        -0.81757915,
        -0.81836885,
        -0.91878706,
        1.9035946,
        1.0338519,
        -1.044044,
        -1.9314622,
        1.9466548,
        0.8290106,
        -1.5790975,
        -1.6750466,
    ],
    np.float32,
)


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
    got = np.concatenate(
        [np.asarray(out.image_emb)[:, :4].ravel(), np.asarray(out.text_emb)[:, :4].ravel()]
    )
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
        return model.apply(
            v, texts=t, capture_intermediates=lambda m, _: isinstance(m, layers.Encoder)
        )

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
        pooled = np.asarray(
            head.apply(
                {"params": txt["MAPHead_0"]},
                jnp.asarray(h, jnp.float32),
                jnp.asarray(texts != 0) if mask_padding else None,
            )
        )
    want = pooled @ np.asarray(txt["head"]["kernel"]) + np.asarray(txt["head"]["bias"])
    np.testing.assert_allclose(out.text_emb, want, rtol=1e-4, atol=1e-5)
    # The pooled rows really differ by position, so reading another one would fail above.
    assert not np.allclose(h[np.arange(4), lengths - 1], h[:, 0], atol=1e-2)
