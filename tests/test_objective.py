"""The training objective's knobs (`objective.Objective`) and the temperature initialisation,
checked inside the real train-step loss function on a curated smoke batch."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from demo_smoke import smoke_config

from cclip_jax import data as data_lib
from cclip_jax import losses
from cclip_jax.curation.shards import read_batches
from cclip_jax.training import trainer
from cclip_jax.training.objective import Objective, make_loss_fn
from cclip_jax.training.setup import build


@pytest.fixture(scope="module")
def setup(smoke_cache, smoke_curated):
    c = smoke_config(smoke_cache, smoke_curated)
    c.mesh.data = c.mesh.fsdp = 1
    s = build(c, devices=jax.devices()[:1])
    batch = data_lib.make_global_batch(next(iter(s.data)), s.batch.rows)
    params = s.init_state(jax.random.key(0)).params
    return s, jax.device_get(batch), params


def _run(setup, objective, batch=None, grads=False):
    s, default_batch, params = setup
    fn = make_loss_fn(s.model, s.batch, objective)
    batch = default_batch if batch is None else batch
    with jax.set_mesh(s.mesh):
        if grads:
            return jax.jit(jax.grad(fn, has_aux=True))(params, batch, jnp.int32(0))
        return jax.jit(fn)(params, batch, jnp.int32(0))


def _embeddings(setup, batch):
    s, _, params = setup
    return s.model.apply(
        {"params": params}, images=batch["images"], texts=batch["text"], concepts=batch["concepts"]
    )


def test_cond_weight_schedule_is_zero_then_a_linear_ramp():
    obj = Objective(cond_weight=2.0, cond_zero_steps=3, cond_ramp_steps=4)
    got = [float(obj.cond_weight_at(s)) for s in range(10)]
    np.testing.assert_allclose(got, [0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0])
    step = Objective(cond_weight=2.0, cond_zero_steps=3)
    assert [float(step.cond_weight_at(s)) for s in (0, 2, 3, 9)] == [0, 0, 2, 2]
    assert float(Objective(cond_weight=0.5).cond_weight_at(0)) == 0.5


@pytest.mark.parametrize(
    ("normalize", "beta"), [("triples", 1.0), ("triples", 0.3), ("batch", 0.0)]
)
def test_conditional_term_is_the_library_loss_with_the_configured_knobs(setup, normalize, beta):
    obj = Objective(
        cond_weight=0.7, unknown_weight=0.5, cross_positive_weight=beta, normalize=normalize
    )
    loss, aux = _run(setup, obj)
    out = _embeddings(setup, setup[1])
    want = losses.conditional_sigmoid_loss(
        out.image_emb,
        out.text_emb,
        out.concept_emb,
        setup[1]["labels"],
        scale=out.cond_scale,
        bias=out.cond_bias,
        unknown_weight=0.5,
        cross_positive_weight=beta,
        normalize=normalize,
    )
    np.testing.assert_allclose(aux["loss_cond"], want, rtol=2e-5)
    np.testing.assert_allclose(loss, aux["loss_sig"] + 0.7 * aux["loss_cond"], rtol=1e-6)


def test_concept_stop_gradient_cuts_only_the_concept_path(setup):
    base = Objective(cond_weight=1.0, unknown_weight=0.5)
    free, _ = _run(setup, base, grads=True)
    cut, _ = _run(setup, Objective(**{**base.__dict__, "concept_stop_gradient": True}), grads=True)
    # The image tower sees the concepts only as constants either way: the same gradient.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), free["img"], cut["img"]
    )
    # The text tower loses the gradient that reached it through the concept embeddings.
    diff = jax.tree.leaves(
        jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), free["txt"], cut["txt"])
    )
    assert max(diff) > 1e-4
    no_cond, _ = _run(setup, Objective(cond_weight=0.0), grads=True)
    diff = jax.tree.leaves(
        jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), no_cond["txt"], cut["txt"])
    )
    assert max(diff) > 1e-4  # ... but keeps what came through the captions' conditional side


def test_plain_multi_positive_makes_identical_captions_positives(setup):
    batch = dict(setup[1])
    text = np.array(batch["text"])
    text[3] = text[5] = text[0]  # rows 0, 3, 5: one caption
    batch["text"] = jnp.asarray(text)
    obj = Objective(cond_weight=0.0, plain_multi_positive=True)
    _, aux = _run(setup, obj, batch)
    out = _embeddings(setup, batch)
    ids = np.asarray(losses.pair_ids_from_tokens(batch["text"]))
    assert ids[3] == ids[5] == ids[0] == 0
    want = losses.sigmoid_loss(
        out.image_emb, out.text_emb, scale=out.scale, bias=out.bias, pair_ids=jnp.asarray(ids)
    )
    np.testing.assert_allclose(aux["loss_sig"], want, rtol=2e-5)
    assert int(aux["plain_extra_positives"]) >= 6  # 3 rows: 9 pairs, 3 of them diagonal
    _, single = _run(setup, Objective(cond_weight=0.0), batch)
    assert abs(float(single["loss_sig"]) - float(aux["loss_sig"])) > 1e-3


def test_biases_start_at_each_terms_positive_rate(setup, tmp_path):
    s = setup[0]
    b = s.config.batch_size
    assert s.resolved["model.bias_init"] == pytest.approx(-np.log(b - 1))
    # The manifest's triple sums are those of the curated batches' labels.
    curated = s.resolved["data.curated_dir"]
    sums = {k: 0 for k in losses.init.TRIPLE_SUMS}
    for batch in read_batches(curated):
        for k, v in losses.triple_sums(batch["labels"]).items():
            sums[k] += v
    with open(os.path.join(curated, "manifest.json")) as f:
        assert json.load(f)["batches"]["triple_sums"] == sums
    want = losses.conditional_bias_init(sums, unknown_weight=s.config.unknown_weight)
    assert s.resolved["model.cond_bias_init"] == pytest.approx(want)
    params = jax.device_get(setup[2])
    assert float(params["b"]) == pytest.approx(-np.log(b - 1), rel=1e-6)
    assert float(params["cond_b"]) == pytest.approx(want, rel=1e-6)
    # The run folder records the values (the evaluation CLI rebuilds the model from them).
    trainer.write_run_config(str(tmp_path), s.config, s.resolved)
    with open(tmp_path / "config.json") as f:
        model = json.load(f)["model"]
    assert model["bias_init"] == s.resolved["model.bias_init"]
    assert model["cond_bias_init"] == s.resolved["model.cond_bias_init"]


def test_tags_term_is_the_classifier_over_real_concept_columns(setup):
    batch = dict(setup[1])
    labels = np.array(batch["labels"])
    labels[:, 3] = 0  # a column without +1, as curation pads K: no concept
    batch["labels"] = jnp.asarray(labels)
    _, aux = _run(setup, Objective(cond_weight=0.0, tags_weight=0.5, unknown_weight=0.5), batch)
    out = _embeddings(setup, batch)
    padding = ~(labels == 1).any(axis=0)
    labels = np.where(padding[None, :], 2, labels).astype(np.int8)
    want = losses.concept_sigmoid_loss(
        out.image_emb,
        out.concept_emb,
        jnp.asarray(labels),
        scale=out.cond_scale,
        bias=out.cond_bias,
        unknown_weight=0.5,
    )
    np.testing.assert_allclose(aux["loss_tags"], want, rtol=2e-5)


def test_rank_form_is_the_library_ranking_loss(setup):
    _, aux = _run(setup, Objective(cond_weight=1.0, cond_form="rank", unknown_weight=0.5))
    out = _embeddings(setup, setup[1])
    want = losses.conditional_ranking_loss(
        out.image_emb,
        out.text_emb,
        out.concept_emb,
        setup[1]["labels"],
        scale=out.cond_scale,
        unknown_weight=0.5,
    )
    np.testing.assert_allclose(aux["loss_cond"], want, rtol=2e-5)


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_hard_negatives_enter_the_plain_term(setup, loss):
    batch = dict(setup[1])
    hard_text = np.roll(np.array(batch["text"]), 1, axis=0)  # any other caption will do
    hard_ok = (np.arange(hard_text.shape[0]) % 3 != 0).astype(np.int8)
    batch.update(hard_text=jnp.asarray(hard_text), hard_ok=jnp.asarray(hard_ok))
    _, aux = _run(setup, Objective(loss=loss, cond_weight=0.0, hard_negatives=True), batch)
    out = _embeddings(setup, batch)
    s, _, params = setup
    hard = s.model.apply({"params": params}, texts=batch["hard_text"]).text_emb
    kw = dict(hard_text_emb=hard, hard_valid=batch["hard_ok"])
    if loss == "sigmoid":
        want = losses.sigmoid_loss(
            out.image_emb, out.text_emb, scale=out.scale, bias=out.bias, **kw
        )
    else:
        want = losses.softmax_loss(out.image_emb, out.text_emb, scale=out.scale, **kw)
    np.testing.assert_allclose(
        aux["loss_sig" if loss == "sigmoid" else "loss_clip"], want, rtol=2e-5
    )
    assert int(aux["hard_unswapped"]) == int((hard_ok == 0).sum())
