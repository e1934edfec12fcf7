"""The v2 experiment's plans and decisions, on hand-made run records (no training), and the
quick config end to end (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cclip_jax.config import load
from cclip_jax.experiment import phases, runner, runs, summarize, verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = os.path.join(ROOT, "configs", "experiment_v2.py")
CAL = {"width": 64, "steps": 2000}


def test_plans():
    exp = load(EXP)
    cal = phases.plan_calibrate(exp)
    assert len(cal) == len(exp.calibrate.widths) * 2 * 2
    assert {r.eval_seed for r in cal} == {exp.dev_eval_seed} and all(r.binding_only for r in cal)
    # The same number of evaluations along every curve.
    assert {r.steps // r.eval_every for r in cal} == {20}
    screen = phases.plan_screen(exp, CAL)
    arms = {r.arm for r in screen}
    assert arms == {*exp.screen.arms, "cclip_lam0.03", "cclip_lam0.1", "cclip_lam0.3"}
    assert {(r.steps, r.width, r.eval_seed) for r in screen} == {(2000, 64, exp.dev_eval_seed)}
    decision = {
        "cclip": ["cclip_rank", "cclip", "cclip_beta"],
        "controls": ["siglip", "tags", "negclip"],
    }
    confirm = phases.plan_confirm(exp, CAL, decision)
    assert len(confirm) == 6 * 5 * 2 and {r.eval_seed for r in confirm} == {exp.test_eval_seed}
    # Fresh seeds: the screen's selection luck does not carry into confirmation.
    assert not {r.seed for r in confirm} & {r.seed for r in screen}
    small = phases.plan_small(exp, CAL, decision)
    assert {(r.batch_size, r.steps) for r in small} == {(32, 4000), (128, 1000)}
    assert {r.arm for r in small} == {"cclip_rank", "siglip"}
    assert exp.test_eval_seed != exp.dev_eval_seed


@pytest.mark.parametrize("arm", [*sorted(runner.ARMS), "cclip_lam0.1"])
def test_every_run_config_validates(arm):
    from cclip_jax.training import checks

    exp = load(EXP)
    run = runs.Run("screen", "natural", arm, 3, 500, 64, 32, 2, binding_only=True)
    c = runs.run_config(exp, run, "/tmp/cache")
    checks.validate_config(c)
    assert (c.seed, c.total_steps, c.batch_size, c.model.embed_dim) == (3, 500, 32, 64)
    assert c.model.image.width == c.model.text.width == 64 and c.model.text.num_heads == 4
    assert c.eval.synthetic.seed == 2 and c.eval.synthetic.retrieval_images == 0
    assert c.data.synthetic.num_train == exp.num_train and c.optim.warmup_steps == 25
    assert exp.base.model.embed_dim == 32  # runs never change the shared base


def test_item_codes_round_trip():
    values = [0, 0.5, 1, 1 / 24, 23 / 24, 5 / 6]
    np.testing.assert_allclose(runs.decode_items(runs.encode_items(values)), values)
    with pytest.raises(ValueError, match="multiples of 1/24"):
        runs.encode_items([0.3])


def test_plateau_step():
    steps = list(range(100, 1100, 100))
    rising = [0.2, 0.3, 0.4, 0.45, 0.5, 0.52, 0.53, 0.53, 0.54, 0.53]
    assert phases.plateau_step(steps, rising, 0.02) == 600
    assert phases.plateau_step(steps, list(np.linspace(0.2, 0.6, 10)), 0.02) == 1000
    np.testing.assert_allclose(phases.smooth([0, 3, 6, 9]), [1.5, 3, 6, 7.5])


def _record(run: runs.Run, primary: float, curve=None, train_s=10.0, items=None, final=None):
    return {
        "run": run.to_dict(),
        "key": run.key,
        "primary": primary,
        "curve": curve or [[run.steps, primary]],
        "final": final or {},
        "items": items or {},
        "loss_curve": [[run.steps, 1.0]],
        "wall_s": train_s + 5,
        "train_s": train_s,
        "eval_s": 1.0,
        "overhead_s": 5.0,
    }


def test_decide_calibrate_compares_widths_at_equal_training_time():
    exp = load(EXP)
    records = []
    for width, steps, slope, train_s in ((32, 1000, 1.0, 100.0), (64, 500, 4.0, 150.0)):
        for preset in ("clean", "natural"):
            for arm in ("siglip", "clip"):
                curve = [[s, min(0.5, 0.2 + slope * s / 5000)] for s in range(50, steps + 1, 50)]
                records.append(
                    _record(
                        runs.Run("calibrate", preset, arm, 0, steps, width, 64, 2),
                        curve[-1][1],
                        curve,
                        train_s,
                    )
                )
    d = phases.decide_calibrate(exp, records)
    # Width 64 runs at 0.3 s/step: 333 steps fit in width 32's 100 s; 0.2 + 4 * 300/5000.
    assert d["width"] == 64
    assert d["score_within_budget"]["64"] == pytest.approx(0.2 + 4 * 300 / 5000)
    assert d["score_within_budget"]["32"] == pytest.approx(0.4)
    # Width 64's curve: 0.44, 0.48, 0.5, 0.5, ... at steps 300, 350, 400, ...; smoothed,
    # 0.473 at 350 (below 0.5 - 0.02) and 0.493 at 400.
    assert not d["plateau_at_last_step"] and d["steps"] == 400


def test_decide_screen():
    exp = load(EXP)
    scores = {
        "cclip": 0.40,
        "cclip_rank": 0.45,
        "cclip_beta": 0.30,
        "cclip_lam0.1": 0.35,
        "clip": 0.42,
        "siglip": 0.38,
        "siglip_curated": 0.20,
        "negclip": 0.30,
        "negclip_sigmoid": 0.33,
        "tags": 0.31,
    }
    records = [
        _record(runs.Run("screen", "natural", a, s, 100, 32, 64, 2), v + 0.01 * s)
        for a, v in scores.items()
        for s in (0, 1)
    ]
    d = phases.decide_screen(exp, records)
    assert d["cclip"] == ["cclip_rank", "cclip", "cclip_lam0.1"]
    assert d["controls"] == ["clip", "tags", "negclip_sigmoid"]
    assert d["ranking"][0] == "cclip_rank"


def _items(rng, p, n=60):
    return runs.encode_items((rng.random(n) < p).astype(float))


def _confirm_records(exp, effects):
    """Records whose per-item scores (and so primary scores) follow `effects`: arm -> p."""
    keys = runs.item_keys(exp)
    records = []
    for preset in exp.confirm.presets:
        for arm, p in effects.items():
            for seed in exp.confirm.seeds:
                rng = np.random.default_rng(seed * 100 + hash(arm) % 97)
                items = {
                    k: {
                        "ids": ",".join(map(str, range(60))),
                        "scores": _items(rng, p + 0.01 * (seed % 3)),
                    }
                    for k in keys
                }
                prim = [f"{s}/{k}/{m}" for s, k, m in exp.prereg.primary]
                final = {k: float(runs.decode_items(items[k]["scores"]).mean()) for k in keys}
                final.update({g: 0.5 for g in exp.prereg.guards if g not in final})
                primary = float(np.mean([final[k] for k in prim]))
                run = runs.Run("confirm", preset, arm, seed, 100, 32, 64, 1)
                records.append(_record(run, primary, items=items, final=final))
    return records


def test_confirm_verdicts_on_planted_effects():
    exp = load(EXP)
    effects = {
        "cclip_big": 0.75,
        "cclip_none": 0.55,
        "cclip_tiny": 0.56,
        "siglip": 0.55,
        "tags": 0.50,
        "negclip": 0.45,
    }
    screen = {
        "cclip": ["cclip_big", "cclip_none", "cclip_tiny"],
        "controls": ["siglip", "tags", "negclip"],
    }
    out = verdict.confirm(exp, _confirm_records(exp, effects), screen)
    natural = out["natural"]
    assert natural["decides"] and not out["clean"]["decides"]
    assert natural["best_control"] == "siglip"
    v = natural["verdicts"]
    assert v["cclip_big"]["verdict"] == "support", v["cclip_big"]["reason"]
    assert v["cclip_none"]["verdict"] in ("refutation", "inconclusive")
    assert natural["overall"] == "support"
    assert verdict.overall({"a": {"verdict": "refutation"}}) == "refutation"
    assert (
        verdict.overall({"a": {"verdict": "refutation"}, "b": {"verdict": "inconclusive"}})
        == "inconclusive"
    )
    big = natural["versus"]["cclip_big"]["siglip"]
    assert big["n_seeds"] == 5 and big["diff"]["lo"] > 0.1
    assert big["bootstrap"]["lo"] < big["diff"]["mean"] < big["bootstrap"]["hi"]
    assert big["diff_simultaneous"]["hi"] - big["diff_simultaneous"]["lo"] > (
        big["diff"]["hi"] - big["diff"]["lo"]
    )  # 1 - 0.05/3 is wider than 95%
    # Holm: the arms' adjusted p are at least their raw p.
    for arm in screen["cclip"]:
        assert v[arm]["holm_p"] >= natural["versus"][arm]["siglip"]["diff"]["p"] - 1e-15


def test_summary_recomputes_from_results_json(tmp_path):
    exp = load(EXP)
    effects = {
        "cclip_a": 0.70,
        "cclip_b": 0.55,
        "cclip_c": 0.50,
        "clip": 0.55,
        "tags": 0.5,
        "negclip": 0.5,
    }
    screen_records = [
        _record(runs.Run("screen", "natural", a, s, 100, 32, 64, 2), p)
        for a, p in {
            **effects,
            "siglip": 0.5,
            "siglip_curated": 0.5,
            "negclip_sigmoid": 0.4,
        }.items()
        for s in (0, 1)
    ]
    screen_decision = phases.decide_screen(exp, screen_records)
    assert screen_decision["controls"] == ["clip", "tags", "negclip"]
    records = _confirm_records(exp, effects)
    bodies = {
        "screen": {"phase": "screen", "decision": screen_decision, "records": screen_records},
        "confirm": {
            "phase": "confirm",
            "decision": verdict.confirm(exp, records, screen_decision),
            "records": records,
        },
    }
    from cclip_jax.experiment import experiment_v2 as v2

    results = json.loads(json.dumps(v2.assemble(exp.to_dict(), bodies)))
    v2.write_outputs(results, str(tmp_path))
    again = summarize.recompute(json.loads((tmp_path / "results.json").read_text()))
    assert again["summary"] == results["summary"]
    # (as JSON text: NaN secondary keys compare unequal as floats)
    assert json.dumps(again["phases"]["confirm"]["decision"]) == json.dumps(
        results["phases"]["confirm"]["decision"]
    )
    assert any("SUPPORT" in line for line in results["summary"])
    md = (tmp_path / "results.md").read_text()
    assert "Phase 2: confirmation, natural" in md and "cclip_a" in md
    assert (tmp_path / "plots" / "confirm_differences.png").exists()
    assert (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_quick_experiment_v2_runs_end_to_end(tmp_path):
    out = tmp_path / "exp"
    cmd = [
        sys.executable,
        "-m",
        "cclip_jax.experiment",
        "--config=configs/experiment_v2.py:quick",
        f"--workdir={out}",
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
    results = json.loads((out / "results.json").read_text())
    exp = load(f"{EXP}:quick")
    assert set(results["phases"]) == set(phases.PHASES)
    screened = {r["run"]["arm"] for r in results["phases"]["screen"]["records"]}
    assert screened == {*exp.screen.arms, *phases.lambda_arms(exp)}  # every arm ran
    natural = results["phases"]["confirm"]["decision"]["natural"]
    assert set(natural["verdicts"]) == set(results["phases"]["screen"]["decision"]["cclip"])
    assert all(
        v["verdict"] in ("support", "refutation", "inconclusive")
        for v in natural["verdicts"].values()
    )
    # The blind text-only baseline sees no image: near chance on same-word items.
    assert 0.2 < results["blind"]["natural"]["primary"] < 0.5
    for name in ("results.md", "report.html", "plots/calibration.png"):
        assert (out / name).exists(), name
    # Resuming reads every run record back: the same results, no training.
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["phases"] == results["phases"]
