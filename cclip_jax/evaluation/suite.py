"""The evaluation suite a config asks for, and the `DIR/eval/step_XXXXXXXX.json` it writes.

`config.eval` (see cclip_jax/config/base.py):

    every_steps    evaluate every N training steps (0: only at the end, -1: never)
    synthetic      world_dir ('' = generate into data.cache_dir), seed, num_items, splits,
                   retrieval_images, captions_per_image, cond_queries, cond_pool, blind
    sugarcrepe     json_dir, image_dir (COCO val2017)            '' = skipped
    aro            relation_json, attribution_json, image_dir
    winoground     examples_jsonl, image_dir
    retrieval      karpathy_json, image_root, split
    zeroshot       folder (class sub-folders), tfds_dir, tfds_split

Result keys are `family/split/kind` (`binding/iid/attribute_swap`, `blind/...`,
`cond_retrieval/iid`, `retrieval/synthetic_iid`) or `family/name` (`sugarcrepe/swap_att`,
`aro/relation`, `winoground/all`, `retrieval/<name>`, `zeroshot/<name>`); every value is the
runners' JSON layout (`metrics`, `n`, `skipped`, `truncated`, `chance`, ...). A published
benchmark that cannot run (a file or folder missing, its config field empty, a file not in
the published format) is recorded as `{"error": message naming the field or file}`; the
others still run, and `python -m cclip_jax.evaluate` then exits 1 (`failed`).
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import logging

from cclip_jax import run_folder
from cclip_jax import synthetic as syn
from cclip_jax.curation import shards
from cclip_jax.evaluation import datasets, retrieval, tasks
from cclip_jax.evaluation import synthetic as syn_eval
from cclip_jax.evaluation.blind import BigramScorer
from cclip_jax.evaluation.runner import Scorer
from cclip_jax.evaluation.scorer import ModelScorer
from cclip_jax.run_folder import paths as folder_paths
from cclip_jax.synthetic.world import FORMAT_VERSION

EVAL_DIR = run_folder.EVAL


def eval_world_dir(config: ml_collections.ConfigDict) -> str:
    """The synthetic world holding the evaluation items (written once into the cache)."""
    s = config.eval.synthetic
    if s.world_dir:
        return s.world_dir
    size = int(config.model.image.image_size)
    out = os.path.join(
        os.path.expanduser(config.data.cache_dir),
        f"eval-world-v{FORMAT_VERSION}-s{s.seed}-n{s.num_items}-px{size}",
    )
    syn.write_world(
        out,
        num_train=1,
        preset="clean",
        seed=s.seed,
        image_size=size,
        num_eval=s.num_items,
        workers=1,
        csv=False,
        progress=False,
    )
    return out


def train_captions(curated_dir: str, limit: int = 200_000) -> list[str]:
    """The first `limit` training captions (enough for a bigram model; a web-scale curation
    is not read whole)."""
    paths = sorted(glob.glob(os.path.join(curated_dir, "batches-*.array_record")))
    return list(itertools.islice((c for p in paths for c in shards.iter_captions(p)), limit))


def _run(results: dict[str, Any], key: str, fn, *args, catch: bool = False) -> None:
    """Runs one evaluation into `results[key]` (with its time). With `catch`, a missing or
    malformed input (a published benchmark's files) is recorded as an error and logged instead
    of stopping the other evaluations."""
    start = time.perf_counter()
    try:
        results[key] = fn(*args)
    except (OSError, ValueError) as e:
        if not catch:
            raise
        logging.error("evaluation %s failed: %s", key, e)
        results[key] = {"error": str(e)}
    results[key]["seconds"] = round(time.perf_counter() - start, 3)


def binding_suite(
    scorer: Scorer, world: str, splits: Sequence[str], results: dict[str, Any], family: str
) -> None:
    """Every item kind of every split of `world` into `results[f"{family}/{split}/{kind}"]`."""
    for split in splits:
        for kind in syn.KINDS:
            task = syn_eval.binding_task(world, split, kind)
            runner = tasks.run_groups if kind in syn.GROUP_KINDS else tasks.run_pairs
            _run(results, f"{family}/{split}/{kind}", runner, scorer, task)


def synthetic_suite(
    scorer: ModelScorer, config: ml_collections.ConfigDict, results: dict[str, Any]
) -> str:
    """Binding suite (+ blind baseline), retrieval and conditional retrieval; returns the
    world folder (the root of relative image paths in the results)."""
    s = config.eval.synthetic
    world = eval_world_dir(config)
    blind = None
    if s.blind and config.data.curated_dir:
        blind = BigramScorer(train_captions(config.data.curated_dir), scorer.image_size)
    binding_suite(scorer, world, s.splits, results, "binding")
    if blind is not None:
        binding_suite(blind, world, s.splits, results, "blind")
    for split in s.splits:
        if s.retrieval_images:
            task = syn_eval.retrieval_task(
                world,
                split,
                num_images=s.retrieval_images,
                captions_per_image=s.captions_per_image,
                preset=config.data.synthetic.preset,
            )
            _run(results, f"retrieval/synthetic_{split}", retrieval.run_retrieval, scorer, task)
        if s.cond_queries:
            _run(
                results,
                f"cond_retrieval/{split}",
                lambda split=split: syn_eval.conditional_retrieval(
                    scorer, world, split, num_queries=s.cond_queries, pool_size=s.cond_pool
                ),
            )
    return world


# The files each published benchmark reads: (field of `config.eval`, what it names, a folder?).
# `external_suite` checks them before loading, so that a missing or unset path is reported by
# its config field (the loaders, also used without a config, only know their arguments).
_INPUTS = {
    "sugarcrepe/all": (
        ("sugarcrepe.json_dir", "SugarCrepe JSON folder", True),
        ("sugarcrepe.image_dir", "COCO val2017 image folder", True),
    ),
    "aro/relation": (
        ("aro.relation_json", "ARO VG-Relation JSON file", False),
        ("aro.image_dir", "ARO image folder", True),
    ),
    "aro/attribution": (
        ("aro.attribution_json", "ARO VG-Attribution JSON file", False),
        ("aro.image_dir", "ARO image folder", True),
    ),
    "winoground/all": (
        ("winoground.examples_jsonl", "Winoground examples.jsonl file", False),
        ("winoground.image_dir", "Winoground image folder", True),
    ),
    "retrieval/karpathy": (
        ("retrieval.karpathy_json", "Karpathy split JSON file", False),
        ("retrieval.image_root", "retrieval image root folder", True),
    ),
    "zeroshot/folder": (("zeroshot.folder", "class-folder root", True),),
    "zeroshot/tfds": (("zeroshot.tfds_dir", "prepared TFDS builder folder", True),),
}


def require_inputs(eval_config: ml_collections.ConfigDict, key: str) -> None:
    """Raises `FileNotFoundError` naming the `config.eval` field (and the path it holds, or
    that it is empty) when a file or folder that evaluation `key` reads is absent."""
    for field, what, is_dir in _INPUTS[key]:
        section, name = field.split(".")
        path = eval_config[section][name]
        if not path:
            raise FileNotFoundError(f"config.eval.{field} is empty: set it to the {what}")
        if not (os.path.isdir(path) if is_dir else os.path.isfile(path)):
            raise FileNotFoundError(f"config.eval.{field}={path!r}: {what} does not exist")


def failed(results: dict[str, Any]) -> list[str]:
    """The keys of the evaluations that recorded an error (missing or malformed files)."""
    return sorted(k for k, v in results.items() if isinstance(v, dict) and "error" in v)


def external_suite(
    scorer: ModelScorer, config: ml_collections.ConfigDict, results: dict[str, Any]
) -> None:
    """The published benchmarks whose files the config points at (each one optional: one is
    asked for by its first field in `_INPUTS`; a failed one is recorded, see `failed`)."""
    e = config.eval
    loaders = {
        "sugarcrepe/all": lambda: tasks.run_sugarcrepe(
            scorer, datasets.load_sugarcrepe(e.sugarcrepe.json_dir, e.sugarcrepe.image_dir)
        ),
        "aro/relation": lambda: tasks.run_pairs(
            scorer, datasets.load_aro(e.aro.relation_json, e.aro.image_dir, "relation")
        ),
        "aro/attribution": lambda: tasks.run_pairs(
            scorer, datasets.load_aro(e.aro.attribution_json, e.aro.image_dir, "attribution")
        ),
        "winoground/all": lambda: tasks.run_groups(
            scorer, datasets.load_winoground(e.winoground.examples_jsonl, e.winoground.image_dir)
        ),
        "retrieval/karpathy": lambda: retrieval.run_retrieval(
            scorer,
            datasets.load_karpathy(
                e.retrieval.karpathy_json, e.retrieval.image_root, e.retrieval.split
            ),
        ),
        "zeroshot/folder": lambda: retrieval.run_classification(
            scorer, datasets.load_image_folder(e.zeroshot.folder)
        ),
        "zeroshot/tfds": lambda: retrieval.run_classification(
            scorer, datasets.load_tfds_classification(e.zeroshot.tfds_dir, e.zeroshot.tfds_split)
        ),
    }
    for key, load in loaders.items():
        section, name = _INPUTS[key][0][0].split(".")
        if e[section].get(name, ""):

            def checked(key=key, load=load):
                require_inputs(e, key)
                return load()

            _run(results, key, checked, catch=True)


def run_suite(scorer: ModelScorer, config: ml_collections.ConfigDict) -> tuple[dict, str]:
    """Every evaluation `config.eval` asks for -> (results by key, image root)."""
    results: dict[str, Any] = {}
    root = synthetic_suite(scorer, config, results) if config.eval.synthetic.num_items else ""
    external_suite(scorer, config, results)
    return results, root


def write_results(workdir: str, step: int, results: dict[str, Any], image_root: str) -> str:
    """`workdir/eval/step_XXXXXXXX.json`, written atomically (`run_folder.paths`); `workdir`
    may be a URL. The image root is a local folder of this machine."""
    folder_paths.makedirs(run_folder.path(workdir, EVAL_DIR))
    path = run_folder.eval_path(workdir, step)
    record = {
        "step": step,
        "image_root": os.path.abspath(image_root) if image_root else "",
        "results": results,
    }
    folder_paths.write_atomic(path, json.dumps(record, indent=1, sort_keys=True))
    return path


def headline(results: dict[str, Any]) -> str:
    """One console line: mean pair accuracy and group score per split."""
    parts = []
    by_split: dict[str, dict[str, list[float]]] = {}
    for key, value in results.items():
        family, *rest = key.split("/")
        if family != "binding" or "metrics" not in value:
            continue
        m = value["metrics"]
        metric = "accuracy" if "accuracy" in m else "group"
        by_split.setdefault(rest[0], {}).setdefault(metric, []).append(m[metric])
    for split, d in by_split.items():
        parts.append(split + " " + " ".join(f"{k}={sum(v) / len(v):.3f}" for k, v in d.items()))
    return "; ".join(parts)


class RunEvaluator:
    """Evaluates a training run at a step: writes `DIR/eval/step_XXXXXXXX.json` and, when
    `config.eval.report`, `DIR/report.html`. The scorer (and its compiled embedding functions)
    is built once and reused with each step's parameters.
    """

    def __init__(self, model: Any, tokenizer: Any, config: ml_collections.ConfigDict, workdir: str):
        self.model, self.tokenizer, self.config, self.workdir = model, tokenizer, config, workdir
        self.scorer: ModelScorer | None = None

    def __call__(self, params: Any, step: int) -> dict[str, Any]:
        if self.scorer is None:
            self.scorer = ModelScorer(
                self.model, params, self.tokenizer, self.config.eval.batch_size
            )
        else:
            self.scorer.set_params(params)
        start = time.perf_counter()
        results, root = run_suite(self.scorer, self.config)
        path = write_results(self.workdir, step, results, root)
        logging.info(
            "eval at step %d (%.1f s): %s -> %s",
            step,
            time.perf_counter() - start,
            headline(results),
            path,
        )
        if self.config.eval.report:
            from cclip_jax import report  # matplotlib only where a report is written

            report.write_report(self.workdir)
        return results
