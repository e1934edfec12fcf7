"""SigLIP at demo scale before and after the temperature fix: how far scale and bias travel,
and the binding keys, 3 seeds.

    python docs/results/temperatures/temperatures.py --workdir=DIR

`before`: the objective the v1 binding experiment was measured with (SigLIP's t = log 10,
b = -10, the towers' learning rate). `after`: the current defaults (biases from the batch,
`optim.lr_mults.temperature = 10`). Both: the v1 experiment's SigLIP arm (i.i.d. batches of 64,
400 steps, `natural` captions, seeds 0-2, 100 items per kind). Resumable (finished runs are
read back); writes DIR/results.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os

import numpy as np

from cclip_jax import cli
from cclip_jax.experiment import analysis, runner

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "..", "..", "..", "configs", "experiment_binding.py")


def experiment(variant: str):
    spec = importlib.util.spec_from_file_location("experiment_binding", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    exp = module.get_config()
    exp.arms, exp.presets = ("siglip",), ("natural",)
    exp.lambda_sweep.cond_weights = ()
    exp.sweep.batch_sizes, exp.sweep.arms = (exp.batch_size,), ("siglip",)
    if variant == "after":  # undo the v1 pins: the defaults of configs/common.py
        exp.base.model.bias_init = exp.base.model.cond_bias_init = None
        exp.base.optim.lr_mults.temperature = 10.0
        exp.base.cond_normalize = "triples"
    return exp


def travel(run_dir: str) -> dict[str, float]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    with open(os.path.join(run_dir, "config.json")) as f:
        model = json.load(f)["model"]
    return {
        "scale_0": model["temperature_init"],
        "scale_T": records[-1]["scale"],
        "bias_0": model["bias_init"],
        "bias_T": records[-1]["bias"],
        "loss_T": records[-1]["loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    keys = analysis.headline_keys(("iid", "compositional"))
    rows = {}
    for variant in ("before", "after"):
        exp = experiment(variant)
        if not rows:  # once per process, before the first run trains
            cli.setup_process(exp.base)
        out = os.path.join(args.workdir, variant)
        results = runner.run_experiment(exp, out)
        runs = [r for r in results["runs"] if r["arm"] == "siglip"]
        moves = [travel(os.path.join(out, r["workdir"])) for r in runs]
        rows[variant] = {
            "travel": {
                k: (np.mean([m[k] for m in moves]), np.std([m[k] for m in moves])) for k in moves[0]
            },
            "keys": {
                k: (np.mean([r["final"][k] for r in runs]), np.std([r["final"][k] for r in runs]))
                for k in keys
            },
            "n": len(runs),
        }
    lines = ["| SigLIP, B = 64, 400 steps | before | after |", "|---|---:|---:|"]
    fmt = lambda m, s: f"{m:.3f} ± {s:.3f}"
    for k in ("scale_0", "scale_T", "bias_0", "bias_T", "loss_T"):
        lines.append(f"| {k} | " + " | ".join(fmt(*rows[v]["travel"][k]) for v in rows) + " |")
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(fmt(*rows[v]["keys"][k]) for v in rows) + " |")
    n = rows["before"]["n"]
    text = (
        f"Mean ± std over {n} seeds; each key on 100 items per kind (binomial SE at chance "
        "about 0.05 for a 2-way key).\n\n" + "\n".join(lines) + "\n"
    )
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
