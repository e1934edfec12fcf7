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

from cclip_jax.experiment import phases, writeup


def assemble(exp_dict: Mapping[str, Any], bodies: Mapping[str, Mapping[str, Any]]
             ) -> dict[str, Any]:
    """The results.json body: config, every phase's decision and records, the summary."""
    results = {"title": exp_dict["title"], "config": dict(exp_dict),
               "phases": {name: dict(body) for name, body in bodies.items()}}
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
    results = assemble(exp.to_dict(), bodies)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    write_outputs(results, workdir)
    return results
