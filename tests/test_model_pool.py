"""The pool arm's model path (concept-query MAP pooling) and its train step, sharded and not."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cclip_jax import data as data_lib
from cclip_jax import losses, models
from cclip_jax.models.vit import ImageEncoder
from cclip_jax.training.objective import Objective, make_loss_fn
from cclip_jax.training.setup import build

B, K = 4, 3


def _pool_model(**overrides):
    cfg = models.get_default_model_config("mu")
    cfg.pool_conditional = True
    for key, value in overrides.items():
        cfg[key] = value
    return models.build_model(cfg)


def _inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    s, length = model.image["image_size"], model.text["max_len"]
    images = rng.uniform(-1, 1, size=(B, s, s, 3)).astype(np.float32)
    tok = lambda n: rng.integers(2, model.text["vocab_size"], size=(n, length)).astype(np.int32)
    return dict(images=images, texts=tok(B), concepts=tok(K))


@pytest.fixture(scope="module")
def pool():
    model = _pool_model()
    return model, model.init_params(jax.random.key(0))


def test_shapes_and_zero_init_gives_the_plain_embedding_for_every_concept(pool):
    model, variables = pool
    kernel = nn.unbox(variables)["params"]["img"]["concept_query"]["kernel"]
    assert kernel.shape == (model.text["width"], model.image["width"])  # D -> tower width
    np.testing.assert_array_equal(kernel, 0.0)
    out = model.apply(variables, **_inputs(model))
    d = out.image_emb.shape[1]
    assert out.image_emb.shape == (B, d) and out.text_emb.shape == (B, d)
    assert out.image_cond_emb.shape == (B, K, d) and out.image_cond_emb.dtype == jnp.float32
    np.testing.assert_allclose(
        out.image_cond_emb, np.repeat(out.image_emb[:, None], K, 1), rtol=1e-6, atol=1e-6
    )
    # Without concepts (evaluation of plain retrieval) there is no conditional embedding.
    plain = model.apply(variables, images=_inputs(model)["images"])
    assert plain.image_cond_emb is None
    np.testing.assert_allclose(plain.image_emb, out.image_emb, rtol=1e-5, atol=1e-6)


def test_queries_change_x_ik_but_not_the_plain_embedding(pool):
    """A nonzero W_q: each concept's embedding differs, while the plain probe's output is that of
    the same weights without the pool switch (each query attends independently)."""
    model, variables = pool
    params = jax.tree.map(lambda a: a, nn.unbox(variables)["params"])
    rng = np.random.default_rng(1)
    kq = params["img"]["concept_query"]["kernel"]
    params["img"]["concept_query"]["kernel"] = jnp.asarray(rng.normal(size=kq.shape), kq.dtype)
    inputs = _inputs(model, seed=2)
    out = model.apply({"params": params}, **inputs)
    assert np.abs(out.image_cond_emb - out.image_emb[:, None]).max() > 1e-2
    assert np.abs(out.image_cond_emb[:, 0] - out.image_cond_emb[:, 1]).max() > 1e-3
    plain_model = models.build_model(models.get_default_model_config("mu"))
    plain_params = dict(
        params, img={k: v for k, v in params["img"].items() if k != "concept_query"}
    )
    plain = plain_model.apply({"params": plain_params}, **inputs)
    assert plain.image_cond_emb is None
    np.testing.assert_allclose(out.image_emb, plain.image_emb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.text_emb, plain.text_emb, rtol=1e-5, atol=1e-6)


def test_image_encoder_returns_the_patch_tokens(pool):
    model, variables = pool
    enc = ImageEncoder(**model.image)
    img = nn.unbox(variables)["params"]["img"]
    images = _inputs(model)["images"]
    pooled, tokens = enc.apply({"params": img}, images, return_tokens=True)
    n = (model.image["image_size"] // model.image["patch_size"]) ** 2
    assert tokens.shape == (B, n, model.image["width"])
    c = jnp.ones((K, model.text["width"]))
    pooled2, cond, tokens2 = enc.apply({"params": img}, images, c, return_tokens=True)
    assert cond.shape == (B, K, pooled.shape[1])
    np.testing.assert_allclose(pooled2, pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tokens2, tokens)


def test_pool_switch_needs_map_pooling():
    cfg = models.get_default_model_config("mu")
    cfg.pool_conditional = True
    cfg.image.pool_type = "gap"
    with pytest.raises(ValueError, match="pool_conditional"):
        models.build_model(cfg)


def _config(smoke, pool=True):
    c = smoke()
    c.async_checkpoints = False
    c.cond_form = "pool"
    c.model.pool_conditional = pool
    return c


def test_pool_form_needs_the_model_switch(smoke):
    c = _config(smoke, pool=False)
    with pytest.raises(ValueError, match="pool_conditional"):
        build(c, devices=jax.devices()[:1])


def test_pool_step_is_the_library_loss_on_the_models_embeddings(smoke):
    c = _config(smoke)
    c.mesh.data = c.mesh.fsdp = 1
    s = build(c, devices=jax.devices()[:1])
    batch = jax.device_get(data_lib.make_global_batch(next(iter(s.data)), s.batch.rows))
    params = s.init_state(jax.random.key(0)).params
    obj = Objective(
        cond_weight=0.7, cond_form="pool", unknown_weight=0.5, cross_positive_weight=0.3
    )
    with jax.set_mesh(s.mesh):
        loss, aux = jax.jit(make_loss_fn(s.model, s.batch, obj))(params, batch, jnp.int32(0))
    out = s.model.apply(
        {"params": params}, images=batch["images"], texts=batch["text"], concepts=batch["concepts"]
    )
    assert out.image_cond_emb.shape[:2] == batch["labels"].shape
    want = losses.pooled_conditional_sigmoid_loss(
        out.image_cond_emb,
        out.text_emb,
        batch["labels"],
        scale=out.cond_scale,
        bias=out.cond_bias,
        unknown_weight=0.5,
        cross_positive_weight=0.3,
    )
    np.testing.assert_allclose(aux["loss_cond"], want, rtol=2e-5)
    np.testing.assert_allclose(loss, aux["loss_sig"] + 0.7 * aux["loss_cond"], rtol=1e-6)
    # At W_q's zero init, x_{i|k} = x_i: the gate-ones conditional loss.
    ones = losses.conditional_sigmoid_loss(
        out.image_emb,
        out.text_emb,
        jnp.ones_like(out.concept_emb),
        batch["labels"],
        scale=out.cond_scale,
        bias=out.cond_bias,
        unknown_weight=0.5,
        cross_positive_weight=0.3,
    )
    np.testing.assert_allclose(aux["loss_cond"], ones, rtol=1e-4)


@pytest.mark.slow  # compiles two more step programs (~80 s on 2 CPU cores)
def test_sharded_pool_step_equals_single_device_step(smoke):
    """As tests/test_train.py's: a 4 x 2 (data, fsdp) mesh against one device, two steps."""
    config = _config(smoke)
    config.mesh.data, config.mesh.fsdp = 4, 2
    config.optim.eps = 1e-3  # see test_train.test_sharded_step_equals_single_device_step
    sharded = build(config)
    one = config.copy_and_resolve_references()
    one.mesh.data, one.mesh.fsdp = 1, 1
    single = build(one, devices=jax.devices()[:1])
    state8 = sharded.init_state(jax.random.key(0))
    state1 = jax.device_put(jax.device_get(state8), single.state_shardings)
    it = iter(sharded.data)
    for _ in range(2):  # step 1 has lr 0 (warmup): step 2 moves the parameters
        local = next(it)
        state8, m8 = sharded.step(state8, data_lib.make_global_batch(local, sharded.batch.rows))
        state1, m1 = single.step(state1, data_lib.make_global_batch(local, single.batch.rows))
        for key in ("loss", "loss_sig", "loss_cond", "grad_norm", "grad_norm_img", "grad_norm_txt"):
            np.testing.assert_allclose(m8[key], m1[key], rtol=2e-5, err_msg=key)
    p8, p1 = jax.device_get(state8.params), jax.device_get(state1.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p8, p1)
    # W_q left its zero init: the conditional term trains the concept queries.
    assert np.abs(p8["img"]["concept_query"]["kernel"]).max() > 0
