"""The v2 experiment's four phases: what each runs, and what it decides for the next.

Each phase is a pure `plan_*` (the runs, given what earlier phases decided) and a pure
`decide_*` (from the runs' records to the phase's decision). `run_phases` executes them in
order, writing `DIR/phase<N>_<name>.json` (the decision, and the records) after each, which
the later phases read; a rerun resumes from the run records (cclip_jax/experiment/runs.py).
Phases 0 and 1 score on the DEV items, phases 2 and 3 on the TEST items.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from cclip_jax.experiment import runner, verdict
from cclip_jax.experiment.runs import Run, execute

PHASES = ("calibrate", "screen", "confirm", "small")


def phase_path(workdir: str, name: str) -> str:
    return os.path.join(workdir, f"phase{PHASES.index(name)}_{name}.json")


# ------------------------------------------------------------------ phase 0: calibrate


def plan_calibrate(exp: ml_collections.ConfigDict) -> list[Run]:
    cal = exp.calibrate
    longest = max(steps for _, steps in cal.widths)
    runs = []
    for width, steps in cal.widths:
        # The same number of evaluations along every curve.
        every = max(1, cal.eval_every * steps // longest)
        for preset in cal.presets:
            for arm in cal.arms:
                runs.append(
                    Run(
                        "calibrate",
                        preset,
                        arm,
                        cal.seed,
                        steps,
                        width,
                        exp.batch_size,
                        exp.dev_eval_seed,
                        eval_every=every,
                        binding_only=True,
                    )
                )
    return runs


def smooth(values: Sequence[float]) -> np.ndarray:
    """A centred 3-point moving average (the ends average over their 2 points)."""
    v = np.asarray(values, np.float64)
    if len(v) < 3:
        return v.copy()
    out = np.convolve(v, np.ones(3) / 3, mode="same")
    out[0], out[-1] = v[:2].mean(), v[-2:].mean()
    return out


def plateau_step(steps: Sequence[int], scores: Sequence[float], tolerance: float) -> int:
    """The first step after which the smoothed `scores` stay within `tolerance` of their best."""
    s = smooth(scores)
    ok = s >= s.max() - tolerance
    # The last index where the curve was below the band, + 1 (all of `ok` after it holds).
    below = np.flatnonzero(~ok)
    first = int(below[-1]) + 1 if len(below) else 0
    return int(steps[first])


def decide_calibrate(
    exp: ml_collections.ConfigDict, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Picks the width D (best score within the width-32 runs' training time, averaged over
    arms and presets; ties go to the narrower) and T (`plateau_step` of D's mean curve)."""
    cal = exp.calibrate
    by = {(r["run"]["width"], r["run"]["preset"], r["run"]["arm"]): r for r in records}
    narrow = min(w for w, _ in cal.widths)
    within: dict[int, list[float]] = {w: [] for w, _ in cal.widths}
    for width, _ in cal.widths:
        for preset in cal.presets:
            for arm in cal.arms:
                r, base = by[(width, preset, arm)], by[(narrow, preset, arm)]
                budget = base["train_s"]  # the narrow run's whole training time
                per_step = r["train_s"] / r["run"]["steps"]
                scores = [score for step, score in r["curve"] if step * per_step <= budget]
                within[width].append(max(scores) if scores else float("nan"))
    # A width none of whose evaluations falls within the budget scores -inf (never chosen).
    mean_within = {
        w: float(np.mean(v)) if not np.isnan(v).any() else -np.inf for w, v in within.items()
    }
    width = max(sorted(mean_within), key=lambda w: (mean_within[w], -w))
    curves = [by[(width, p, a)]["curve"] for p in cal.presets for a in cal.arms]
    steps = [s for s, _ in curves[0]]
    mean_curve = np.mean([[score for _, score in c] for c in curves], axis=0)
    t = plateau_step(steps, mean_curve, cal.tolerance)
    at_end = t == steps[-1]
    if at_end:
        logging.warning(
            "calibration: the mean curve is still rising at its last step %d; T is "
            "that step, the runs are not shown to be at plateau",
            t,
        )
    return {
        "width": int(width),
        "steps": int(t),
        "score_within_budget": {str(w): v for w, v in mean_within.items()},
        "mean_curve": [[int(s), float(v)] for s, v in zip(steps, mean_curve, strict=True)],
        "smoothed": [float(v) for v in smooth(mean_curve)],
        "plateau_at_last_step": at_end,
    }


# ------------------------------------------------------------------ phase 1: screen


def lambda_arms(exp: ml_collections.ConfigDict) -> list[str]:
    return [runner.lambda_arm(lam) for lam in exp.screen.lambdas]


def plan_screen(exp: ml_collections.ConfigDict, cal: Mapping[str, Any]) -> list[Run]:
    arms = [*exp.screen.arms, *lambda_arms(exp)]
    return [
        Run(
            "screen",
            exp.screen.preset,
            arm,
            seed,
            cal["steps"],
            cal["width"],
            exp.batch_size,
            exp.dev_eval_seed,
        )
        for arm in arms
        for seed in exp.screen.seeds
    ]


def is_cclip(arm: str) -> bool:
    return arm.startswith("cclip")


def decide_screen(
    exp: ml_collections.ConfigDict, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The DEV-item ranking (mean primary score over seeds) and what phase 2 carries."""
    scores: dict[str, list[float]] = {}
    for r in records:
        scores.setdefault(r["run"]["arm"], []).append(r["primary"])
    mean = {a: float(np.mean(v)) for a, v in scores.items()}
    ranking = sorted(mean, key=lambda a: -mean[a])
    cclip = [a for a in ranking if is_cclip(a)][: exp.screen.n_cclip]
    baseline = max(exp.screen.baselines, key=lambda a: mean[a])
    negclip = max(exp.screen.negclip, key=lambda a: mean[a])
    return {
        "dev_mean": mean,
        "ranking": ranking,
        "cclip": cclip,
        "baseline": baseline,
        "negclip": negclip,
        "controls": [baseline, "tags", negclip],
    }


# ------------------------------------------------------------------ phases 2 and 3


def plan_confirm(
    exp: ml_collections.ConfigDict, cal: Mapping[str, Any], screen: Mapping[str, Any]
) -> list[Run]:
    arms = [*screen["cclip"], *screen["controls"]]
    return [
        Run(
            "confirm",
            preset,
            arm,
            seed,
            cal["steps"],
            cal["width"],
            exp.batch_size,
            exp.test_eval_seed,
        )
        for preset in exp.confirm.presets
        for arm in arms
        for seed in exp.confirm.seeds
    ]


def plan_small(
    exp: ml_collections.ConfigDict, cal: Mapping[str, Any], screen: Mapping[str, Any]
) -> list[Run]:
    """The best CCLIP arm of the screen against the baseline at other batch sizes, at equal
    examples seen."""
    sm = exp.small
    return [
        Run(
            "small",
            sm.preset,
            arm,
            seed,
            max(1, cal["steps"] * exp.batch_size // b),
            cal["width"],
            b,
            exp.test_eval_seed,
        )
        for b in sm.batch_sizes
        for arm in (screen["cclip"][0], sm.baseline)
        for seed in sm.seeds
    ]


# ------------------------------------------------------------------ running


def _write(path: str, body: Mapping[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(body, f, indent=1)
    os.replace(tmp, path)


def _read(workdir: str, name: str) -> dict[str, Any]:
    path = phase_path(workdir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: run phase {name!r} first (--config.phases includes it)"
        )
    with open(path) as f:
        return json.load(f)


def _execute_all(
    exp: ml_collections.ConfigDict, workdir: str, runs: Sequence[Run], name: str
) -> list[dict[str, Any]]:
    records = []
    for n, run in enumerate(runs):
        record = execute(exp, workdir, run)
        records.append(record)
        logging.info(
            "phase %s run %d/%d %s: primary %.3f (%.0f s)",
            name,
            n + 1,
            len(runs),
            run.key,
            record["primary"],
            record["wall_s"],
        )
    return records


# What each phase plans and decides from the decisions of the phases before it; run_phases and
# summarize.recompute both go through these two tables.
_PLANS = {
    "calibrate": lambda exp, d: plan_calibrate(exp),
    "screen": lambda exp, d: plan_screen(exp, d["calibrate"]),
    "confirm": lambda exp, d: plan_confirm(exp, d["calibrate"], d["screen"]),
    "small": lambda exp, d: plan_small(exp, d["calibrate"], d["screen"]),
}
_DECISIONS = {
    "calibrate": lambda exp, records, d: decide_calibrate(exp, records),
    "screen": lambda exp, records, d: decide_screen(exp, records),
    "confirm": lambda exp, records, d: verdict.confirm(exp, records, d["screen"]),
    "small": lambda exp, records, d: verdict.small(exp, records, d["screen"]),
}


def plan(name: str, exp: ml_collections.ConfigDict, decisions: Mapping[str, Any]) -> list[Run]:
    """The runs of phase `name`; `decisions`: phase name -> decision of the earlier phases."""
    return _PLANS[name](exp, decisions)


def decide(
    name: str,
    exp: ml_collections.ConfigDict,
    records: Sequence[Mapping[str, Any]],
    decisions: Mapping[str, Any],
) -> dict[str, Any]:
    """Phase `name`'s decision from its run records and the earlier phases' decisions."""
    return _DECISIONS[name](exp, records, decisions)


class _Decisions(dict):
    """Earlier phases' decisions, read from their phase files in `workdir` when first needed."""

    def __init__(self, workdir: str):
        super().__init__()
        self.workdir = workdir

    def __missing__(self, name: str) -> Any:
        self[name] = _read(self.workdir, name)["decision"]
        return self[name]


def run_phases(exp: ml_collections.ConfigDict, workdir: str) -> dict[str, dict[str, Any]]:
    """Runs (or resumes) `exp.phases` in order; returns every phase's file body present."""
    os.makedirs(workdir, exist_ok=True)
    unknown = set(exp.phases) - set(PHASES)
    if unknown:
        raise ValueError(f"config.phases: unknown {sorted(unknown)}; known: {PHASES}")
    decisions = _Decisions(workdir)
    for name in PHASES:
        if name not in exp.phases:
            continue
        records = _execute_all(exp, workdir, plan(name, exp, decisions), name)
        decision = decisions[name] = decide(name, exp, records, decisions)
        _write(phase_path(workdir, name), {"phase": name, "decision": decision, "records": records})
        logging.info(
            "phase %s done: %s",
            name,
            {k: v for k, v in decision.items() if not isinstance(v, (dict, list))},
        )
    return {n: _read(workdir, n) for n in PHASES if os.path.exists(phase_path(workdir, n))}
