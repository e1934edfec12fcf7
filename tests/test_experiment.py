"""The binding experiment end to end: `configs/experiment_binding.py:quick` (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cclip_jax.config import load
from cclip_jax.experiment import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = os.path.join(ROOT, "configs", "experiment_binding.py")


def test_plan_covers_grid_and_sweep_once():
    exp = load(EXP)
    runs = runner.plan(exp)
    grid = len(exp.presets) * len(exp.arms) * len(exp.seeds)
    extra = (len(exp.sweep.batch_sizes) - 1) * len(exp.sweep.arms) * len(exp.seeds)
    lam = len(exp.lambda_sweep.cond_weights) * len(exp.seeds)
    assert len(runs) == grid + extra + lam == len({tuple(r.values()) for r in runs})
    assert (
        runner.arm_config(
            exp.base, "cclip_lam0.1", preset="clean", seed=0, batch_size=64
        ).cond_weight
        == 0.1
    )
    c = runner.arm_config(exp.base, "cclip_gate_ones", preset="clean", seed=2, batch_size=32)
    assert (c.model.gate, c.seed, c.batch_size, c.data.synthetic.preset) == ("ones", 2, 32, "clean")
    assert exp.base.model.gate == "identity"  # arms never change the shared base
    assert (
        runner.arm_config(exp.base, "clip", preset="natural", seed=0, batch_size=64).data.mode
        == "baseline"
    )
    with pytest.raises(ValueError, match="unknown arm 'simclr'"):
        runner.arm_config(exp.base, "simclr", preset="clean", seed=0, batch_size=64)


@pytest.mark.parametrize("arm", sorted(runner.ARMS))
def test_every_arm_is_a_valid_training_config(arm):
    from cclip_jax.training import checks

    exp = load(EXP)
    c = runner.arm_config(exp.base, arm, preset="natural", seed=0, batch_size=64)
    checks.validate_config(c)
    for path, value in runner.ARMS[arm].items():  # the override reached the field it names
        node = c
        for name in path.split("."):
            node = node[name]
        assert node == value, (arm, path)


@pytest.mark.slow
def test_quick_experiment_runs_end_to_end(tmp_path):
    out = tmp_path / "exp"
    cmd = [
        sys.executable,
        "-m",
        "cclip_jax.experiment",
        "--config=configs/experiment_binding.py:quick",
        f"--workdir={out}",
        f"--config.base.data.cache_dir={tmp_path / 'cache'}",
        f"--config.base.compilation_cache_dir={tmp_path / 'xla'}",
    ]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.json") as f:
        results = json.load(f)
    exp = load(f"{EXP}:quick")
    assert results["arms"] == [*exp.arms, "cclip_lam1", "blind"]
    key = "compositional/attribute_swap/accuracy"
    for arm in exp.arms:
        cell = results["table"][arm]["natural"][key]
        assert cell["n_seeds"] == len(exp.seeds) and 0 <= cell["mean"] <= 1
    assert results["table"]["blind"]["natural"]["iid/group_size/image"]["mean"] == 0.25
    for arm in exp.sweep.arms:
        assert set(results["sweep"][arm]) == {str(b) for b in exp.sweep.batch_sizes}
    assert results["summary"][0].startswith("Rule:") and len(results["runs"]) == 18
    assert os.path.exists(out / "report.html")
    # Resuming reads every run back instead of training it again.
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    with open(out / "results.json") as f:
        assert json.load(f)["table"] == results["table"]
