"""Label quality on the synthetic world, scored against its ground-truth oracle.

For every (caption, concept) cell of every curated batch, the synthetic world knows whether the
concept truly holds in the caption's scene (`cclip_jax.synthetic.holds`, masked captions
included). Per label rule this reports:

  * precision of `+1` (the concept holds) and of `-1` (it does not),
  * the false-negative rate hidden in `0` and in `-1` (the concept holds after all),
  * cells whose concept lies outside the caption grammar (the oracle says None; not scored).

  python -m cclip_jax.curation.quality --num=2000 --preset=natural
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
from collections import Counter
from collections.abc import Mapping
from typing import Any

import ml_collections

from cclip_jax.curation import adapters, local_runner, read_batches, settings


def scenes_of_webdataset(path: str) -> dict[str, Any]:
    """Key -> `Scene` from the `KEY.json` members of a webdataset folder (the synthetic
    world's writer format)."""
    from cclip_jax.synthetic import Scene  # the synthetic world is optional for curation

    scenes = {}
    for unit in adapters.list_units(path, "webdataset", adapters.ReadOptions()):
        with tarfile.open(unit) as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".json"):
                    key = os.path.join(
                        os.path.dirname(m.name), os.path.basename(m.name).split(".", 1)[0]
                    )
                    scenes[key] = Scene.from_json(json.load(tar.extractfile(m)))
    return scenes


def score(out_dir: str, scenes: Mapping[str, Any]) -> dict[str, Any]:
    """Scores every label of a curated output against the oracle.

    Args:
      out_dir: curated output (its batches' keys must be keys of `scenes`).
      scenes: key -> `Scene`.

    Returns:
      `{"+1": {...}, "-1": {...}, "0": {...}, "outside_grammar": n}` where each label entry has
      `n`, `true` (oracle says it holds) and the derived rates.
    """
    from cclip_jax.synthetic import holds

    tally: dict[int, Counter] = {1: Counter(), -1: Counter(), 0: Counter()}
    outside = 0
    for batch in read_batches(out_dir):
        k = batch["num_concepts"]
        for row, key in enumerate(batch["key"]):
            scene = scenes[key]
            for j, concept in enumerate(batch["concepts"][:k]):
                truth = holds(scene, concept)
                if truth is None:
                    outside += 1
                    continue
                tally[int(batch["labels"][row, j])][truth] += 1

    def rate(c: Counter, want: bool) -> float | None:
        n = c[True] + c[False]
        return round(c[want] / n, 4) if n else None

    return {
        "+1": {"n": sum(tally[1].values()), "precision": rate(tally[1], True)},
        "-1": {
            "n": sum(tally[-1].values()),
            "precision": rate(tally[-1], False),
            "false_negative_rate": rate(tally[-1], True),
        },
        "0": {"n": sum(tally[0].values()), "false_negative_rate": rate(tally[0], True)},
        "outside_grammar": outside,
    }


def report(
    train_dir: str,
    config: ml_collections.ConfigDict,
    work_dir: str,
    rules: tuple[str, ...] = ("none", "complete", "attribute"),
) -> dict[str, Any]:
    """Curates the world's training shards once per label rule and scores each output."""
    scenes = scenes_of_webdataset(train_dir)
    out = {}
    for rule in rules:
        c = ml_collections.ConfigDict(config.to_dict())
        c.label_rule = rule
        d = os.path.join(work_dir, rule)
        local_runner.run(c, train_dir, "webdataset", d)
        out[rule] = score(d, scenes)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Label quality of curation on the synthetic world")
    ap.add_argument("--num", type=int, default=2000)
    ap.add_argument("--preset", default="natural")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from cclip_jax.synthetic import write_world

    with tempfile.TemporaryDirectory() as tmp:
        write_world(
            os.path.join(tmp, "world"),
            args.num,
            preset=args.preset,
            seed=args.seed,
            num_eval=1,
            csv=False,
            progress=False,
        )
        c = settings.default_config()
        c.batch_size, c.progress, c.tokenizer_vocab_size = args.batch_size, False, 256
        result = report(os.path.join(tmp, "world", "train"), c, tmp)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
