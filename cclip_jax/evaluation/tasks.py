"""Per-item task runners: a true vs a false caption per image (SugarCrepe, ARO) and
Winoground-style groups of two images and two captions.

Each takes a task (`cclip_jax.evaluation.task_types`) and a `Scorer` and returns the
JSON-ready result dict of `cclip_jax.evaluation.runner`, with each evaluated item's scores in
`result["per_item"]`. Whole-set tasks (retrieval, zero-shot classification) are in
`cclip_jax.evaluation.retrieval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cclip_jax.evaluation import metrics
from cclip_jax.evaluation.images import Skipped
from cclip_jax.evaluation.runner import (
    Scorer,
    chunks,
    embed_images,
    embed_texts,
    need_items,
    result,
)
from cclip_jax.evaluation.task_types import GroupTask, PairTask

SUGARCREPE_CATEGORIES = ("replace", "swap", "add")


def _per_item(
    ids: Sequence[str], kept: np.ndarray, scores: dict[str, np.ndarray]
) -> dict[str, list]:
    """Each evaluated item's id and expected score per metric (`scores`: metric -> `[n]`): what
    a bootstrap over items resamples (cclip_jax.experiment.stats)."""
    return {
        "ids": [str(ids[i]) for i in kept],
        **{k: [round(float(x), 6) for x in v] for k, v in scores.items()},
    }


def _group_accuracy(
    correct: np.ndarray, groups: Sequence[str], min_size: int
) -> tuple[float | None, dict[str, dict[str, float]]]:
    """Macro accuracy over groups with at least `min_size` items (None if there is none), and
    the per-group table."""
    groups = np.asarray(groups)
    table = {}
    for g in np.unique(groups):
        mask = groups == g
        if mask.sum() >= min_size:
            table[str(g)] = {"accuracy": float(correct[mask].mean()), "n": int(mask.sum())}
    macro = float(np.mean([v["accuracy"] for v in table.values()])) if table else None
    return macro, table


def run_pairs(scorer: Scorer, task: PairTask, batch_size: int = 256) -> dict[str, Any]:
    """True vs false caption per image (SugarCrepe, ARO).

    Args:
      scorer: the model.
      task: `N` items; images are cropped to `task.boxes` when given.
      batch_size: items read and embedded at once.

    Returns:
      The result dict; metrics `accuracy` and, with `task.groups`, `macro_accuracy` (the mean
      over groups of at least `task.min_group_size` items, each in `result["groups"]`).
    """
    skipped, truncated = Skipped(), Skipped()
    skipped.extend(task.skipped)
    source = task.source or task.name
    correct, kept = [], []
    for idx in chunks(len(task), batch_size):
        x, ok = embed_images(
            scorer,
            [task.image_paths[i] for i in idx],
            [f"{task.image_paths[i]} (item {task.ids[i]})" for i in idx],
            skipped,
            None if task.boxes is None else [task.boxes[i] for i in idx],
        )
        idx = idx[ok]
        if not len(idx):
            continue
        tp = embed_texts(
            scorer,
            [task.positives[i] for i in idx],
            [f"{source}: item {task.ids[i]} true caption" for i in idx],
            truncated,
        )
        tn = embed_texts(
            scorer,
            [task.negatives[i] for i in idx],
            [f"{source}: item {task.ids[i]} false caption" for i in idx],
            truncated,
        )
        # Only the diagonal is needed; a chunk's full [b, b] similarity is cheap at b <= 256.
        correct.append(
            metrics.pair_correct(
                np.diagonal(scorer.similarity(x, tp)), np.diagonal(scorer.similarity(x, tn))
            )
        )
        kept.append(idx)
    need_items(task.name, sum(map(len, kept)), skipped)
    correct, kept = np.concatenate(correct), np.concatenate(kept)
    values = {"accuracy": float(correct.mean())}
    chance = {"accuracy": 0.5}
    extra = {"per_item": _per_item(task.ids, kept, {"accuracy": correct})}
    if task.groups is not None:
        macro, extra["groups"] = _group_accuracy(
            correct, [task.groups[i] for i in kept], task.min_group_size
        )
        if macro is not None:  # left out rather than NaN, which is not JSON
            values["macro_accuracy"], chance["macro_accuracy"] = macro, 0.5
    return result(task.name, values, len(correct), skipped, truncated, chance, **extra)


def run_groups(scorer: Scorer, task: GroupTask, batch_size: int = 256) -> dict[str, Any]:
    """Winoground-style items (2 images x 2 captions each).

    Returns:
      The result dict; metrics `text`, `image`, `group` (chance 1/4, 1/4, 1/6) and, with
      `task.tags`, the same per tag in `result["tags"]`. An item is skipped if either of its
      images fails to load.
    """
    skipped, truncated = Skipped(), Skipped()
    skipped.extend(task.skipped)
    source = task.source or task.name
    scores, kept = [], []
    for idx in chunks(len(task), batch_size):
        flat = [(i, j) for i in idx for j in (0, 1)]
        x, ok = embed_images(
            scorer,
            [task.image_paths[i][j] for i, j in flat],
            [f"{task.image_paths[i][j]} (item {task.ids[i]})" for i, j in flat],
            skipped,
        )
        both = ok.reshape(-1, 2).all(axis=1)
        x = x[both.repeat(2)[ok]]  # rows of items whose two images both loaded
        idx = idx[both]
        if not len(idx):
            continue
        t = embed_texts(
            scorer,
            [task.captions[i][c] for i in idx for c in (0, 1)],
            [f"{source}: item {task.ids[i]} caption_{c}" for i in idx for c in (0, 1)],
            truncated,
        )
        s = scorer.similarity(x, t).reshape(len(idx), 2, len(idx), 2)  # [n, img, n', cap]
        n = np.arange(len(idx))
        scores.append(s[n, :, n, :].transpose(0, 2, 1))  # [n, caption, image]
        kept.append(idx)
    need_items(task.name, sum(map(len, kept)), skipped)
    s, kept = np.concatenate(scores), np.concatenate(kept)
    per_item = metrics.winoground_correct(s)
    extra = {"per_item": _per_item(task.ids, kept, per_item)}
    if task.tags is not None:
        tags = np.asarray([task.tags[i] for i in kept])
        extra["tags"] = {
            str(g): {
                **{k: float(v[tags == g].mean()) for k, v in per_item.items()},
                "n": int((tags == g).sum()),
            }
            for g in np.unique(tags)
        }
    return result(
        task.name,
        metrics.winoground_scores(s),
        len(s),
        skipped,
        truncated,
        metrics.winoground_scores(np.zeros((1, 2, 2))),
        **extra,
    )


def run_sugarcrepe(
    scorer: Scorer, tasks: dict[str, PairTask], batch_size: int = 256
) -> dict[str, Any]:
    """All SugarCrepe subsets: per-subset accuracy, and per category (replace / swap / add)
    the unweighted mean over its subsets, as the SugarCrepe paper reports."""
    results = {name: run_pairs(scorer, task, batch_size) for name, task in tasks.items()}
    values = {name: r["metrics"]["accuracy"] for name, r in results.items()}
    for category in SUGARCREPE_CATEGORIES:
        members = [v for name, v in values.items() if name.startswith(category + "_")]
        if members:
            values[category] = float(np.mean(members))
    skipped, truncated = Skipped(), Skipped()
    for r in results.values():
        skipped.extend(Skipped(r["skipped"], r["skipped_examples"]))
        truncated.extend(Skipped(r["truncated"], r["truncated_examples"]))
    # Each subset's run already logged its skips and cuts.
    return result(
        "sugarcrepe",
        values,
        sum(r["n"] for r in results.values()),
        skipped,
        truncated,
        dict.fromkeys(values, 0.5),
        log=False,
        subsets=results,
    )
