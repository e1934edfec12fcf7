"""Warm start: does the conditional term help once SigLIP has trained? (measured 2026-11-24)

    python docs/results/warm_start/warm_start.py --workdir=/tmp/warm

On `clean` captions, at the binding experiment's settings (`configs/experiment_binding.py`:
demo towers, batch 64, 400 steps, curated batches), per seed: SigLIP for 400 steps, then 400
more steps from its checkpoint (`config.init_from`: parameters only, a fresh optimizer and
schedule) with SigLIP again (the control), CCLIP at λ = 0.01, or CCLIP at λ = 0.1. Prints a
markdown table of mean ± std over the seeds. Finished runs are read back, not retrained.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)

KEYS = (
    "iid/attribute_replace/accuracy",
    "iid/attribute_swap/accuracy",
    "iid/size_swap/accuracy",
    "iid/object_replace/accuracy",
    "iid/group_attribute/group",
    "iid/group_size/group",
    "compositional/attribute_swap/accuracy",
    "compositional/size_swap/accuracy",
    "compositional/group_size/group",
    "iid/cond_retrieval/p1",
    "iid/retrieval/t2i_r1",
)
# (column, folder, arm, λ override, starts from the first stage's run)
STAGES = (
    ("siglip 400", "siglip", "siglip_curated", None, False),
    ("then siglip 400", "then_siglip", "siglip_curated", None, True),
    ("then cclip λ=0.01", "then_cclip_lam0.01", "cclip", None, True),
    ("then cclip λ=0.1", "then_cclip_lam0.1", "cclip", 0.1, True),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()

    from absl import flags

    flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags
    import numpy as np

    from cclip_jax import cli
    from cclip_jax.curation import demo_data
    from cclip_jax.experiment import analysis, runner
    from cclip_jax.training import trainer

    cli.quiet_libraries()
    spec = importlib.util.spec_from_file_location(
        "experiment_binding", os.path.join(ROOT, "configs", "experiment_binding.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = module.get_config(None).base
    cli.setup_process(base)  # once: every stage trains in this process
    scores: dict[str, list[list[float]]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        start = os.path.join(args.workdir, STAGES[0][1], f"seed{seed}")
        for name, folder, arm, lam, warm in STAGES:
            c = runner.arm_config(base, arm, preset="clean", seed=seed, batch_size=64)
            if lam is not None:
                c.cond_weight = lam
            c.init_from = os.path.join(start, "checkpoints") if warm else ""
            path = os.path.join(args.workdir, folder, f"seed{seed}")
            final = os.path.join(path, "eval", f"step_{c.total_steps:08d}.json")
            if not os.path.exists(final):
                c.data.curated_dir = demo_data.ensure_demo_data(c)
                trainer.train_and_evaluate(c, path)
            with open(final) as f:
                flat = analysis.flatten(json.load(f)["results"])
            scores.setdefault(name, []).append([flat[k] for k in KEYS])
    print("| clean | " + " | ".join(scores) + " |")
    print("|---|" + "---:|" * len(scores))
    for i, key in enumerate(KEYS):
        cells = [
            f"{np.mean(np.asarray(r)[:, i]):.2f} ± {np.std(np.asarray(r)[:, i], ddof=1):.2f}"
            for r in scores.values()
        ]
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
