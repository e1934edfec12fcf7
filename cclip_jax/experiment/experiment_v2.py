"""The v2 experiment end to end: phases, then `DIR/results.json`, `results.md`, plots, report.

`run` executes (or resumes) the config's phases (cclip_jax/experiment/phases.py) and writes
the outputs from the phase files. `write_outputs(results, DIR)` writes them from a results
dict alone (`python -m cclip_jax.experiment.summarize DIR/results.json` recomputes the
verdicts from it first).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import ml_collections

from cclip_jax.experiment import analysis, phases, runs, writeup


def blind_baseline(exp: ml_collections.ConfigDict, workdir: str, preset: str) -> dict[str, Any]:
    """The text-only bigram baseline (no image) on the TEST items: what the item captions give
    away by their words alone. `{"primary", "final"}` (flattened metrics)."""
    from cclip_jax.curation import demo_data
    from cclip_jax.evaluation import suite
    from cclip_jax.evaluation.blind import BigramScorer

    run = runs.Run(
        "blind",
        preset,
        "siglip",
        0,
        1,
        int(exp.base.model.embed_dim),
        exp.batch_size,
        exp.test_eval_seed,
    )
    config = runs.run_config(exp, run, os.path.join(workdir, "cache"))
    scorer = BigramScorer(
        suite.train_captions(demo_data.ensure_demo_data(config)), config.model.image.image_size
    )
    results: dict[str, Any] = {}
    suite.binding_suite(
        scorer, suite.eval_world_dir(config), config.eval.synthetic.splits, results, "binding"
    )
    flat = analysis.flatten(results)
    return {"primary": runs.primary_score(flat, exp.prereg.primary), "final": flat}


def assemble(
    exp_dict: Mapping[str, Any],
    bodies: Mapping[str, Mapping[str, Any]],
    blind: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The results.json body: config, every phase's decision and records, the blind baseline,
    the summary."""
    results = {
        "title": exp_dict["title"],
        "config": dict(exp_dict),
        "phases": {name: dict(body) for name, body in bodies.items()},
        "blind": dict(blind or {}),
    }
    results["overhead"] = writeup.overhead(results)
    results["summary"] = writeup.summary(results)
    return results


def write_outputs(results: Mapping[str, Any], workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    tmp = os.path.join(workdir, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, os.path.join(workdir, "results.json"))
    plots = writeup.plots(results, os.path.join(workdir, "plots"))
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(writeup.markdown(results, plots, workdir))
    from cclip_jax.report import experiment_v2 as report

    report.write(workdir, results, plots)


def run(exp: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs the phases of `exp` in `workdir` and writes the outputs; returns results.json."""
    start = time.perf_counter()
    bodies = phases.run_phases(exp, workdir)
    blind = (
        {p: blind_baseline(exp, workdir, p) for p in exp.confirm.presets}
        if "confirm" in bodies
        else {}
    )
    results = assemble(exp.to_dict(), bodies, blind)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    write_outputs(results, workdir)
    return results
