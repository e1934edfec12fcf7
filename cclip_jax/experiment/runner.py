"""The binding experiment: arms x caption presets x seeds (+ a batch-size sweep) at equal compute.

Every run trains the same towers for the same steps at the same batch size on the same
synthetic pairs; only what the arm names changes (`ARMS`). Each run is an ordinary training run
(`cclip_jax.training.trainer.train_and_evaluate`) in `DIR/runs/<preset>/<arm>/b<B>/seed<S>`,
evaluated at its last step by the synthetic suite. A run whose final evaluation exists is not
redone, so a killed experiment continues where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections
from absl import logging

from cclip_jax import config as config_lib
from cclip_jax.experiment import analysis

# What each arm changes in the base config (the base is CCLIP at the config's λ), a variant
# table (cclip_jax.config.variant); `cclip_lam<λ>` arms add CCLIP at another λ.
ARMS: dict[str, dict[str, Any]] = {
    # (plain_multi_positive is a sigmoid-term option: the softmax arms switch it off.)
    "clip": {
        "loss": "softmax",
        "cond_weight": 0.0,
        "data.mode": "baseline",
        "plain_multi_positive": False,
    },
    "siglip": {"cond_weight": 0.0, "data.mode": "baseline"},
    "siglip_curated": {"cond_weight": 0.0, "data.mode": "curated"},
    "cclip": {},
    "cclip_gate_ones": {"model.gate": "ones"},
    "cclip_pos_only": {"labels": "positive_only"},
    # The objective's knobs (cclip_jax/config/base.py).
    "cclip_rank": {"cond_form": "rank"},  # a ranking form, with no bias to collapse to
    # Concept-conditioned pooling: x_{i|k} = MAP(patches_i; probe + W·c_k), ungated logit.
    "cclip_pool": {"cond_form": "pool", "model.pool_conditional": True},
    "cclip_beta": {"cross_positive_weight": 0.0},  # only each image's own caption is a +
    "cclip_stopgrad": {"concept_stop_gradient": True},
    "cclip_warmup": {"cond_schedule.zero_frac": 0.25, "cond_schedule.ramp_frac": 0.25},
    # Which kind of concept carries the signal (curation's concept_kinds; the same batches).
    "cclip_unigram": {"data.curation.concept_kinds": "unigram"},
    "cclip_attribute_noun": {"data.curation.concept_kinds": "attribute_noun"},
    "cclip_masked": {"data.curation.concept_kinds": "masked"},
    # Control: the same labels as an image x concept classifier, no conditional pairs.
    "tags": {"cond_weight": 0.0, "tags_weight": 1.0},
    # Control: NegCLIP's swapped-caption hard negatives, on the softmax and the sigmoid base.
    "negclip": {
        "loss": "softmax",
        "cond_weight": 0.0,
        "data.mode": "baseline",
        "data.hard_negatives": True,
        "plain_multi_positive": False,
    },
    "negclip_sigmoid": {"cond_weight": 0.0, "data.mode": "baseline", "data.hard_negatives": True},
}
BLIND = "blind"  # the text-only baseline, one deterministic "seed" per preset
LAMBDA_ARM = "cclip_lam"  # + a value: `cclip` with that cond_weight (the λ sweep)


def lambda_arm(value: float) -> str:
    return f"{LAMBDA_ARM}{value:g}"


def arm_config(
    base: ml_collections.ConfigDict, arm: str, *, preset: str, seed: int, batch_size: int
) -> ml_collections.ConfigDict:
    """The training config of one run: `base` (left as it is) with the arm's overrides."""
    c = ml_collections.ConfigDict(base.to_dict())
    config_lib.variant(c, {**ARMS, **_lambda_arm(arm)}, arm, kind="arm")
    return config_lib.override(
        c, {"seed": seed, "batch_size": batch_size, "data.synthetic.preset": preset}
    )


def _lambda_arm(arm: str) -> dict[str, dict[str, Any]]:
    """`{arm: {"cond_weight": λ}}` for an arm `cclip_lam<λ>` of the λ sweep, else `{}`."""
    if arm.startswith(LAMBDA_ARM):
        try:
            return {arm: {"cond_weight": float(arm.removeprefix(LAMBDA_ARM))}}
        except ValueError:
            pass  # not a number: an unknown arm
    return {}


def run_dir(workdir: str, preset: str, arm: str, batch_size: int, seed: int) -> str:
    return os.path.join(workdir, "runs", preset, arm, f"b{batch_size}", f"seed{seed}")


def plan(exp: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """Every run of the experiment (main grid first, then the sweep's extra batch sizes)."""
    runs = [
        dict(preset=p, arm=a, batch_size=exp.batch_size, seed=s)
        for p in exp.presets
        for a in exp.arms
        for s in exp.seeds
    ]
    runs += [
        dict(preset=exp.lambda_sweep.preset, arm=lambda_arm(lam), batch_size=exp.batch_size, seed=s)
        for lam in exp.lambda_sweep.cond_weights
        for s in exp.seeds
    ]
    seen = {tuple(r.values()) for r in runs}
    for b in exp.sweep.batch_sizes:
        for a in exp.sweep.arms:
            for s in exp.seeds:
                r = dict(preset=exp.sweep.preset, arm=a, batch_size=b, seed=s)
                if tuple(r.values()) not in seen:
                    seen.add(tuple(r.values()))
                    runs.append(r)
    return runs


def _final_eval(path: str, step: int) -> dict[str, Any] | None:
    f = os.path.join(path, "eval", f"step_{step:08d}.json")
    if not os.path.exists(f):
        return None
    with open(f) as fh:
        return json.load(fh)["results"]


def run_one(
    exp: ml_collections.ConfigDict, workdir: str, run: dict[str, Any]
) -> tuple[dict[str, float], float]:
    """Trains and evaluates one run unless its final evaluation exists; (flat metrics, s)."""
    from cclip_jax.curation import demo_data
    from cclip_jax.training import trainer  # JAX and the data stack only when something trains

    path = run_dir(workdir, **run)
    config = arm_config(exp.base, **run)
    done = _final_eval(path, config.total_steps)
    timing = os.path.join(path, "run_seconds.json")
    if done is None:
        start = time.perf_counter()  # the run's time includes building its demo data
        config.data.curated_dir = demo_data.ensure_demo_data(config)
        trainer.train_and_evaluate(config, path)
        done = _final_eval(path, config.total_steps)
        if done is None:
            raise RuntimeError(f"{path}: training ended without its final evaluation")
        with open(timing, "w") as f:
            json.dump({"seconds": time.perf_counter() - start}, f)
    seconds = 0.0  # a resumed experiment reports the time the run took when it ran
    if os.path.exists(timing):
        with open(timing) as f:
            seconds = json.load(f)["seconds"]
    return analysis.flatten(done), seconds


def blind_results(exp: ml_collections.ConfigDict, preset: str) -> dict[str, float]:
    """The text-only baseline on the preset's training captions (flattened)."""
    from cclip_jax.curation import demo_data
    from cclip_jax.evaluation import suite
    from cclip_jax.evaluation.blind import BigramScorer

    config = arm_config(exp.base, "cclip", preset=preset, seed=0, batch_size=exp.batch_size)
    curated = demo_data.ensure_demo_data(config)
    scorer = BigramScorer(suite.train_captions(curated), config.model.image.image_size)
    results: dict[str, Any] = {}
    suite.binding_suite(
        scorer, suite.eval_world_dir(config), config.eval.synthetic.splits, results, "binding"
    )
    return analysis.flatten(results)


def run_experiment(exp: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) every run; writes `DIR/results.json`, `DIR/results.md` (tables for a
    README) and `DIR/report.html`."""
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    runs = plan(exp)
    flat: list[tuple[dict[str, Any], dict[str, float]]] = []
    records = []
    for n, run in enumerate(runs):
        metrics, seconds = run_one(exp, workdir, run)
        flat.append((run, metrics))
        records.append(
            {
                **run,
                "wall_s": round(seconds, 1),
                "workdir": os.path.relpath(run_dir(workdir, **run), workdir),
                "final": metrics,
            }
        )
        elapsed = time.perf_counter() - start
        logging.info(
            "run %d/%d %s done in %.0f s (elapsed %.0f s)", n + 1, len(runs), run, seconds, elapsed
        )
    aggregate_start = time.perf_counter()
    results = assemble(exp, flat, {p: blind_results(exp, p) for p in exp.presets})
    # wall_s: the runs' own times (a resumed experiment counts each run once) + this call's
    # aggregation, blind baselines and report.
    results.update(
        runs=records,
        wall_s=round(sum(r["wall_s"] for r in records) + time.perf_counter() - aggregate_start, 1),
    )
    tmp = os.path.join(workdir, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, os.path.join(workdir, "results.json"))
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(analysis.markdown(results, analysis.headline_keys(exp.base.eval.synthetic.splits)))
    from cclip_jax import report

    report.write_experiment_report(workdir, results)
    return results


def assemble(
    exp: ml_collections.ConfigDict,
    flat: list[tuple[dict[str, Any], dict[str, float]]],
    blind: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The results.json body: table (arm -> preset -> key), sweep (arm -> B -> key), summary."""

    def group(select) -> dict[str, dict[str, Any]]:
        return analysis.aggregate([m for r, m in flat if select(r)])

    table: dict[str, dict[str, Any]] = {}
    for arm in exp.arms:
        table[arm] = {
            p: group(
                lambda r, a=arm, p=p: (
                    r["arm"] == a and r["preset"] == p and r["batch_size"] == exp.batch_size
                )
            )
            for p in exp.presets
        }
    lam_arms = [lambda_arm(lam) for lam in exp.lambda_sweep.cond_weights]
    for arm in lam_arms:
        table[arm] = {
            p: group(lambda r, a=arm, p=p: r["arm"] == a and r["preset"] == p) for p in exp.presets
        }
    table[BLIND] = {p: analysis.aggregate([blind[p]]) for p in exp.presets}
    sweep = {
        arm: {
            str(b): group(
                lambda r, a=arm, b=b: (
                    r["arm"] == a and r["batch_size"] == b and r["preset"] == exp.sweep.preset
                )
            )
            for b in exp.sweep.batch_sizes
        }
        for arm in exp.sweep.arms
    }
    keys = analysis.headline_keys(exp.base.eval.synthetic.splits)
    pairs = [("cclip", a) for a in exp.arms if a != "cclip"]
    pairs += [("siglip_curated", "siglip"), ("cclip_gate_ones", "siglip_curated")]
    n = exp.base.eval.synthetic.num_items
    summary = [
        f"Rule: a difference 'exceeds the seed spread' when |Δ mean| > std_a + std_b "
        f"(std over {len(exp.seeds)} seeds) and > 2·√2·SE of chance on {n} items."
    ]
    for p in exp.presets:
        by_arm = {a: table[a][p] for a in table}
        for arm in (BLIND, *exp.arms):
            summary += analysis.chance_check(by_arm, arm, keys, p, n)
        summary += analysis.summarize(by_arm, keys, pairs, p, n)
        if p == exp.lambda_sweep.preset:
            summary += analysis.summarize(
                by_arm,
                keys,
                [(a, b) for a in lam_arms for b in ("cclip", "siglip_curated")],
                f"{p}, λ sweep (cclip: λ={exp.base.cond_weight:g})",
                n,
            )
    sweep_pairs = [(a, b) for a in exp.sweep.arms for b in exp.sweep.arms if a < b]
    for b in exp.sweep.batch_sizes:
        by_arm = {a: sweep[a][str(b)] for a in sweep}
        summary += analysis.summarize(by_arm, keys, sweep_pairs, f"{exp.sweep.preset}, B={b}", n)
    small, large = min(exp.sweep.batch_sizes), max(exp.sweep.batch_sizes)
    if "cclip" in sweep and "siglip" in sweep and small < large:
        # The proposal's claim: curated small batches stand in for large random ones.
        by_arm = {
            f"cclip@{small}": sweep["cclip"][str(small)],
            f"siglip@{large}": sweep["siglip"][str(large)],
        }
        summary += analysis.summarize(by_arm, keys, [tuple(by_arm)], exp.sweep.preset, n)
    return {
        "title": exp.title,
        "config": exp.to_dict(),
        "arms": [*exp.arms, *lam_arms, BLIND],
        "presets": list(exp.presets),
        "seeds": list(exp.seeds),
        "batch_sizes": list(exp.sweep.batch_sizes),
        "table": table,
        "sweep": sweep,
        "summary": summary,
    }
