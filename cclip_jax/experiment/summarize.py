"""Recomputes the v2 experiment's decisions and outputs from `results.json` alone.

    python -m cclip_jax.experiment.summarize DIR/results.json [--out=OTHER_DIR]

Every phase's decision is recomputed from its run records and the config stored in the file
(no run folder is read), then results.json, results.md, the plots and report.html are written
into `--out` (default: the file's folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import app, flags

from cclip_jax.experiment import experiment_v2, phases

_OUT = flags.DEFINE_string("out", None, "Folder to write into (default: the results' folder).")


def recompute(results: Mapping[str, Any]) -> dict[str, Any]:
    """The results with every phase decision recomputed from the records."""
    exp = ml_collections.ConfigDict(results["config"])
    bodies, decisions = {}, {}
    for name in phases.PHASES:  # in order: a phase's decision reads the earlier ones
        if name not in results["phases"]:
            continue
        body = results["phases"][name]
        decisions[name] = phases.decide(name, exp, body["records"], decisions)
        bodies[name] = {**body, "decision": decisions[name]}
    out = experiment_v2.assemble(results["config"], bodies, results.get("blind"))
    if "wall_s" in results:
        out["wall_s"] = results["wall_s"]
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: python -m cclip_jax.experiment.summarize DIR/results.json")
    with open(argv[1]) as f:
        results = json.load(f)
    out_dir = _OUT.value or os.path.dirname(os.path.abspath(argv[1]))
    again = recompute(results)
    experiment_v2.write_outputs(again, out_dir)
    print("\n".join(again["summary"]))


if __name__ == "__main__":
    app.run(main)
