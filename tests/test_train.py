"""The training job: 2-step demo smoke run + resume, sharded == single-device, NaN stop."""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from demo_smoke import SMOKE

from cclip_jax import data as data_lib
from cclip_jax import evaluate, models, run_folder
from cclip_jax.config import load
from cclip_jax.evaluation.scorer import ModelScorer
from cclip_jax.run_folder.metrics import read_jsonl
from cclip_jax.training import trainer
from cclip_jax.training.setup import build

# XLA's persistent cache (tests/conftest.py): tests that compile the same program compile it once.
pytestmark = pytest.mark.usefixtures("compile_cache")


@pytest.fixture
def run_config(smoke):
    """`run_config(**overrides)`: the shared smoke config (tests/conftest.py) on a 4 x 2
    (data, fsdp) mesh, synchronous checkpoints, with top-level `overrides`."""

    def make(**overrides):
        c = smoke(**overrides)
        c.mesh.data, c.mesh.fsdp = 4, 2
        c.async_checkpoints = False
        return c

    return make


def test_demo_smoke_run_writes_everything_and_resumes(run_config, tmp_path):
    workdir = str(tmp_path / "run")
    last = trainer.train_and_evaluate(run_config(), workdir)
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in records] == [1, 2]
    for key in (
        "loss",
        "loss_sig",
        "loss_cond",
        "lr",
        "scale",
        "bias",
        "cond_scale",
        "grad_norm",
        "param_norm",
        "triples_pos",
        "triples_neg",
        "triples_unknown",
        "logit_pos",
        "logit_neg",
        "gate_entropy",
        "examples_per_s",
        "steps_per_s",
        "captions_cut",
        "concepts_cut",
    ):
        assert np.isfinite(records[-1][key]), key
    lam = run_config().cond_weight
    assert records[-1]["loss"] == pytest.approx(
        records[-1]["loss_sig"] + lam * records[-1]["loss_cond"], rel=1e-5
    )
    assert records[0]["triples_pos"] > 0 and 0 < records[0]["gate_entropy"] <= 1
    assert last["loss"] == records[-1]["loss"]
    assert any(
        f.startswith("events.out.tfevents")
        for f in os.listdir(os.path.join(workdir, "tensorboard"))
    )
    ckpts = os.path.join(workdir, "checkpoints")
    assert sorted(os.listdir(ckpts)) == ["1", "2"]
    with open(os.path.join(ckpts, "2", "config", "metadata")) as f:
        assert json.load(f)["batch_size"] == 16
    # The run ends with its evaluation and the report.
    with open(os.path.join(workdir, "eval", "step_00000002.json")) as f:
        evaluation = json.load(f)
    results = evaluation["results"]
    for kind in ("attribute_swap", "object_replace", "group_relation"):
        assert results[f"binding/iid/{kind}"]["n"] == 4
        assert results[f"blind/iid/{kind}"]["n"] == 4
    assert 0 <= results["retrieval/synthetic_iid"]["metrics"]["i2t_r1"] <= 1
    rows = results["cond_retrieval/iid"]["rows"]
    assert rows and os.path.exists(os.path.join(evaluation["image_root"], rows[0]["query"]))
    assert os.path.exists(os.path.join(workdir, "report.html"))
    # The standalone evaluation of the same checkpoint scores the same.
    path = evaluate.evaluate(run_config(), workdir, step=2)
    with open(path) as f:
        again = json.load(f)["results"]
    assert (
        again["binding/iid/attribute_swap"]["metrics"]
        == results["binding/iid/attribute_swap"]["metrics"]
    )

    # The same command with more steps resumes at step 2 and keeps the earlier records.
    trainer.train_and_evaluate(run_config(total_steps=3), workdir)
    again = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in again] == [1, 2, 3]
    assert again[:2] == records

    # Another config does not resume: the error names each field, and nothing is written.
    with open(os.path.join(workdir, "config.json")) as f:
        stored = f.read()
    for overrides, match in (
        ({"cond_weight": 0.5}, r"cond_weight: 1\.0 -> 0\.5"),
        ({"seed": 3}, r"seed: 0 -> 3"),
    ):
        with pytest.raises(run_folder.ConfigChangedError, match=match):
            trainer.train_and_evaluate(run_config(total_steps=4, **overrides), workdir)
    wide = run_config(total_steps=4)
    wide.model.embed_dim = 64  # a shape change: refused before orbax sees mismatched arrays
    with pytest.raises(run_folder.ConfigChangedError, match=r"model\.embed_dim: 32 -> 64"):
        trainer.train_and_evaluate(wide, workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == stored
    assert [r["step"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))] == [1, 2, 3]
    # Forced, it resumes with the new value and the folder's history says so.
    trainer.train_and_evaluate(
        run_config(total_steps=4, cond_weight=0.5), workdir, force_config_change=True
    )
    history = read_jsonl(os.path.join(workdir, "history.jsonl"))
    assert [h["event"] for h in history] == ["start", "resume", "forced_config_change", "resume"]
    assert history[2]["changes"] == [{"field": "cond_weight", "old": 1.0, "new": 0.5}]
    with open(os.path.join(workdir, "config.json")) as f:
        forced = json.load(f)
    assert forced["cond_weight"] == 0.5 and forced["max_present"] == "manifest"
    # A folder written when max_present was spelled -1 (now 'manifest'): refused, named.
    run_folder.write_config(workdir, {**forced, "max_present": -1})
    with pytest.raises(run_folder.ConfigChangedError, match=r"max_present: -1 -> 'manifest'"):
        trainer.train_and_evaluate(run_config(total_steps=4, cond_weight=0.5), workdir)


def test_sharded_step_equals_single_device_step(run_config):
    config = run_config()
    # Adam's first update is lr·g/(|g| + eps): with the default eps, gradients that are pure
    # rounding noise (directions the cosine similarity is blind to, which the ring's summation
    # order changes) become updates of up to ±lr. A larger eps keeps updates proportional to
    # the gradients, so comparing parameters compares gradients.
    config.optim.eps = 1e-3
    sharded = build(config)
    assert dict(sharded.mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert sharded.batch.axes == ("data", "fsdp")
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
        for key in (
            "loss",
            "loss_sig",
            "loss_cond",
            "grad_norm",
            "grad_norm_img",
            "grad_norm_txt",
            "logit_pos",
        ):
            np.testing.assert_allclose(m8[key], m1[key], rtol=2e-5, err_msg=key)
    p8, p1 = jax.device_get(state8.params), jax.device_get(state1.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p8, p1)
    moved = jax.device_get(sharded.init_state(jax.random.key(0)).params)
    assert not np.allclose(moved["img"]["embedding"]["kernel"], p8["img"]["embedding"]["kernel"])


@pytest.mark.slow  # compiles one more step program
def test_nan_loss_stops_with_step_and_checkpoint_named(run_config, tmp_path):
    # max_present=1 is below what the curated rows hold: the loss is NaN by contract.
    config = run_config(max_present=1)
    with pytest.raises(trainer.NonFiniteLossError, match=r"at step 1; last good checkpoint: None"):
        trainer.train_and_evaluate(config, str(tmp_path / "nan"))
    assert not os.listdir(tmp_path / "nan" / "checkpoints")


@pytest.mark.slow  # one more smoke training run
def test_init_from_a_siglip_npz_loads_its_parameters(run_config, tmp_path):
    """`config.init_from` a big_vision `.npz`, end to end: step 1 trains at learning rate 0
    (warmup), so the parameters of its checkpoint are exactly the file's."""
    config = run_config()
    model = models.build_model(config.model)
    params = nn.unbox(jax.device_get(model.init_params(jax.random.key(7))))["params"]
    npz = str(tmp_path / "siglip.npz")
    models.save_siglip_npz({k: v for k, v in params.items() if not k.startswith("cond_")}, npz)
    config.init_from, config.eval.every_steps = npz, -1
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(config, workdir)
    scorer, step = ModelScorer.from_workdir(workdir, step=1)
    assert step == 1
    restored = jax.device_get(scorer.params)
    for name in ("cond_t", "cond_b"):  # not in a SigLIP checkpoint: the model's initial values
        del restored[name], params[name]
    jax.tree.map(np.testing.assert_array_equal, restored, params)
    assert not os.path.exists(os.path.join(workdir, "eval"))  # every_steps=-1: no evaluation


@pytest.mark.parametrize("every, due", [(0, []), (2, [2, 4]), (4, [4]), (-1, [])])
def test_evaluation_steps_follow_config(every, due):
    """Steps evaluated inside the loop; the final evaluation follows the loop."""
    config = load(SMOKE)
    config.total_steps, config.eval.every_steps = 6, every
    assert [s for s in range(1, 7) if trainer._eval_due(config, s)] == due
