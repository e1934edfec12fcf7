"""How often a curated batch's *other* captions are true of an image, against random batches.

    python docs/results/experiment_v2/batch_false_negatives.py WORKDIR [--presets=clean,natural]
        [--batches=300]

Builds (or reuses, from WORKDIR/cache) the curated folder that the experiment's curated arms
train on, per caption preset, exactly as `cclip_jax.experiment` builds it. Then, for sampled
curated batches and for random batches of the same examples, asks the world's oracle
(`synthetic.holds`) whether caption j is true of image i for every i != j. A pair where it is
true is a false negative of the plain (image, caption) term: the loss pushes apart an image
and a caption that describes it. Exact copies of i's own caption are counted apart from other
true captions (paraphrases, re-orderings, sub-descriptions).
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import numpy as np

from cclip_jax.curation import demo_data, shards
from cclip_jax.experiment import runs
from cclip_jax.synthetic import holds, sample_scene


def batch_stats(keys, captions, world_seed: int, cache: dict) -> tuple[int, int, int]:
    """(pairs i != j, exact copies of i's caption, other captions true of image i)."""
    scenes = []
    for k in keys:
        if k not in cache:
            cache[k] = sample_scene(world_seed, int(k), "train")
        scenes.append(cache[k])
    n, copies, true = 0, 0, 0
    for i, scene in enumerate(scenes):
        for j, cap in enumerate(captions):
            if i == j:
                continue
            n += 1
            if cap == captions[i]:
                copies += 1
            elif holds(scene, cap):
                true += 1
    return n, copies, true


def curated_dir(preset: str, workdir: str) -> tuple[str, int]:
    """The curated folder of the experiment's curated arms on `preset` (built if absent)."""
    root = os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    )
    spec = importlib.util.spec_from_file_location(
        "experiment_v2_config", os.path.join(root, "configs", "experiment_v2.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    exp = module.get_config()
    run = runs.Run("confirm", preset, "siglip_curated", 100, 3750, 64, 64, 1)
    config = runs.run_config(exp, run, os.path.join(workdir, "cache"))
    return demo_data.ensure_demo_data(config), int(exp.world_seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workdir")
    p.add_argument("--presets", default="clean,natural")
    p.add_argument("--batches", type=int, default=300)
    args = p.parse_args()
    for preset in args.presets.split(","):
        folder, world_seed = curated_dir(preset, args.workdir)
        batches = list(shards.read_batches(folder))
        rng = np.random.default_rng(0)
        picked = rng.choice(len(batches), min(args.batches, len(batches)), replace=False)
        every = [(k, c) for b in batches for k, c in zip(b["key"], b["caption"], strict=True)]
        cache: dict = {}
        rows = {"curated": np.zeros(3), "random": np.zeros(3)}
        size = len(batches[0]["key"])
        for i in picked:
            b = batches[i]
            rows["curated"] += batch_stats(b["key"], b["caption"], world_seed, cache)
            members = [every[j] for j in rng.choice(len(every), size, replace=False)]
            keys, caps = zip(*members, strict=True)
            rows["random"] += batch_stats(keys, caps, world_seed, cache)
        for name, (n, copies, true) in rows.items():
            print(
                f"{preset} {name}: {len(picked)} batches of {size}; of {int(n)} pairs i != j, "
                f"copies of i's caption {copies / n:.4f}, other captions true of image i "
                f"{true / n:.4f} (per image {true / n * (size - 1):.2f} of {size - 1})"
            )


if __name__ == "__main__":
    main()
