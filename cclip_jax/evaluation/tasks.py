"""Task runners: a loaded benchmark task and a `Scorer` -> a JSON-ready result.

Every runner returns

    {"name", "metrics": {...}, "n": items evaluated, "skipped": count, "skipped_examples": [...],
     "truncated": count, "truncated_examples": [...], "chance": {...}}

(plus per-group tables where the benchmark reports them). Images are read and embedded chunk by
chunk (`batch_size` at a time), so memory does not grow with the set: only embeddings are kept.
Items whose image is missing or cannot be decoded are skipped and counted, on top of those the
loader already skipped. Captions longer than the text tower's length are *still evaluated*, cut
as the tower cuts them; they are counted, named (file and item id) and logged.

`chance` is what a model scoring everything equal gets; the metrics' tie convention
(`cclip_jax.evaluation.metrics`) makes it exact, so it is computed by the same metric code on a
constant score matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from absl import logging

from cclip_jax.evaluation import metrics
from cclip_jax.evaluation.datasets import GroupTask, PairTask, RetrievalTask
from cclip_jax.evaluation.images import Box, ClassificationTask, ImageSource, Skipped, load_images

TRUNCATED = "longer than the text length, cut"
SUGARCREPE_CATEGORIES = ("replace", "swap", "add")


class Scorer(Protocol):
    """What a runner needs of a model (`cclip_jax.evaluation.scorer.ModelScorer` is one)."""

    image_size: int

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """float32 `[N, S, S, 3]` in [-1, 1] -> `[N, D]`."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`[N]` texts -> (`[N, D]`, bool `[N]`: longer than the text length, cut)."""
        ...

    def similarity(self, image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """`[N, D]`, `[M, D]` -> `[N, M]`."""
        ...


# ---------------------------------------------------------------------------- helpers


def _chunks(n: int, batch_size: int) -> list[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _embed_images(scorer: Scorer, sources: Sequence[ImageSource], names: Sequence[str],
                  skipped: Skipped, boxes: Sequence[Box] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One chunk: (`[n_ok, D]` embeddings, bool `[n]` ok); failures go into `skipped`."""
    images, ok, failed = load_images(sources, scorer.image_size, boxes, names)
    skipped.extend(failed)
    emb = scorer.embed_images(images[ok]) if ok.any() else np.zeros((0, 0), np.float32)
    return np.asarray(emb, np.float32), ok


def _embed_texts(scorer: Scorer, texts: Sequence[str], names: Sequence[str],
                 truncated: Skipped) -> np.ndarray:
    """`[n]` texts -> `[n, D]`; the cut ones are named in `truncated`."""
    emb, cut = scorer.embed_texts(list(texts))
    for i in np.flatnonzero(cut):
        truncated.add(names[i], TRUNCATED)
    return np.asarray(emb, np.float32)


def _image_embeddings(scorer: Scorer, sources: Sequence[ImageSource], names: Sequence[str],
                      skipped: Skipped, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All images, chunk by chunk: (`[n_ok, D]` embeddings, bool `[N]` ok)."""
    embs, oks = [], []
    for idx in _chunks(len(sources), batch_size):
        emb, ok = _embed_images(scorer, [sources[i] for i in idx], [names[i] for i in idx],
                                skipped)
        embs.extend([emb] if ok.any() else [])
        oks.append(ok)
    ok = np.concatenate(oks) if oks else np.zeros(0, bool)
    return (np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)), ok


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _need_items(name: str, n: int, skipped: Skipped) -> None:
    if n == 0:
        raise ValueError(f"{name}: no item could be evaluated ({skipped.note()})")


def _result(name: str, values: dict[str, float], n: int, skipped: Skipped, truncated: Skipped,
            chance: dict[str, float], log: bool = True, **extra: Any) -> dict[str, Any]:
    if log and skipped.count:
        logging.warning("%s: %s", name, skipped.note())
    if log and truncated.count:
        logging.warning("%s: %d captions %s (still evaluated): %s", name, truncated.count,
                        TRUNCATED, ", ".join(truncated.examples))
    return {"name": name, "metrics": values, "n": int(n), "skipped": skipped.count,
            "skipped_examples": list(skipped.examples), "truncated": truncated.count,
            "truncated_examples": list(truncated.examples), "chance": chance, **extra}


# ---------------------------------------------------------------------------- runners


def _per_item(ids: Sequence[str], kept: np.ndarray, scores: dict[str, np.ndarray]
              ) -> dict[str, list]:
    """Each evaluated item's id and expected score per metric (`scores`: metric -> `[n]`): what
    a bootstrap over items resamples (cclip_jax.experiment.stats)."""
    return {"ids": [str(ids[i]) for i in kept],
            **{k: [round(float(x), 6) for x in v] for k, v in scores.items()}}


def _group_accuracy(correct: np.ndarray, groups: Sequence[str], min_size: int
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
    for idx in _chunks(len(task), batch_size):
        x, ok = _embed_images(scorer, [task.image_paths[i] for i in idx],
                              [f"{task.image_paths[i]} (item {task.ids[i]})" for i in idx],
                              skipped, None if task.boxes is None else
                              [task.boxes[i] for i in idx])
        idx = idx[ok]
        if not len(idx):
            continue
        tp = _embed_texts(scorer, [task.positives[i] for i in idx],
                          [f"{source}: item {task.ids[i]} true caption" for i in idx], truncated)
        tn = _embed_texts(scorer, [task.negatives[i] for i in idx],
                          [f"{source}: item {task.ids[i]} false caption" for i in idx],
                          truncated)
        # Only the diagonal is needed; a chunk's full [b, b] similarity is cheap at b <= 256.
        correct.append(metrics.pair_correct(np.diagonal(scorer.similarity(x, tp)),
                                            np.diagonal(scorer.similarity(x, tn))))
        kept.append(idx)
    _need_items(task.name, sum(map(len, kept)), skipped)
    correct, kept = np.concatenate(correct), np.concatenate(kept)
    values = {"accuracy": float(correct.mean())}
    chance = {"accuracy": 0.5}
    extra = {"per_item": _per_item(task.ids, kept, {"accuracy": correct})}
    if task.groups is not None:
        macro, extra["groups"] = _group_accuracy(correct, [task.groups[i] for i in kept],
                                                 task.min_group_size)
        if macro is not None:  # left out rather than NaN, which is not JSON
            values["macro_accuracy"], chance["macro_accuracy"] = macro, 0.5
    return _result(task.name, values, len(correct), skipped, truncated, chance, **extra)


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
    for idx in _chunks(len(task), batch_size):
        flat = [(i, j) for i in idx for j in (0, 1)]
        x, ok = _embed_images(scorer, [task.image_paths[i][j] for i, j in flat],
                              [f"{task.image_paths[i][j]} (item {task.ids[i]})"
                               for i, j in flat], skipped)
        both = ok.reshape(-1, 2).all(axis=1)
        x = x[both.repeat(2)[ok]]  # rows of items whose two images both loaded
        idx = idx[both]
        if not len(idx):
            continue
        t = _embed_texts(scorer, [task.captions[i][c] for i in idx for c in (0, 1)],
                         [f"{source}: item {task.ids[i]} caption_{c}"
                          for i in idx for c in (0, 1)], truncated)
        s = scorer.similarity(x, t).reshape(len(idx), 2, len(idx), 2)  # [n, img, n', cap]
        n = np.arange(len(idx))
        scores.append(s[n, :, n, :].transpose(0, 2, 1))  # [n, caption, image]
        kept.append(idx)
    _need_items(task.name, sum(map(len, kept)), skipped)
    s, kept = np.concatenate(scores), np.concatenate(kept)
    per_item = metrics.winoground_correct(s)
    extra = {"per_item": _per_item(task.ids, kept, per_item)}
    if task.tags is not None:
        tags = np.asarray([task.tags[i] for i in kept])
        extra["tags"] = {str(g): {**{k: float(v[tags == g].mean()) for k, v in per_item.items()},
                                  "n": int((tags == g).sum())} for g in np.unique(tags)}
    return _result(task.name, metrics.winoground_scores(s), len(s), skipped, truncated,
                   metrics.winoground_scores(np.zeros((1, 2, 2))), **extra)


def run_retrieval(scorer: Scorer, task: RetrievalTask, batch_size: int = 256,
                  ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Image <-> text retrieval over the whole set (`[N_img, N_txt]` similarity).

    Returns:
      The result dict; metrics `i2t_r{k}`, `t2i_r{k}`; `n` images and `n_captions`. An image
      that fails to load is dropped with its captions.
    """
    skipped, truncated = Skipped(), Skipped()
    skipped.extend(task.skipped)
    x, ok = _image_embeddings(scorer, task.image_paths, task.image_paths, skipped, batch_size)
    _need_items(task.name, int(ok.sum()), skipped)
    new_index = np.cumsum(ok) - 1  # old image index -> row of x
    keep_txt = ok[task.caption_image]
    txt_idx = np.flatnonzero(keep_txt)
    # "<file>: <image id> caption <r>", r counting that image's captions from 0.
    rank = np.zeros(len(task.captions), np.int64)
    seen: dict[int, int] = {}
    for j, img in enumerate(task.caption_image):
        rank[j] = seen.get(int(img), 0)
        seen[int(img)] = rank[j] + 1
    source = task.source or task.name
    t = np.concatenate([
        _embed_texts(scorer, [task.captions[j] for j in chunk],
                     [f"{source}: {task.ids[task.caption_image[j]]} caption {rank[j]}"
                      for j in chunk], truncated)
        for chunk in (txt_idx[c] for c in _chunks(len(txt_idx), batch_size))])
    t2i = new_index[task.caption_image[txt_idx]]
    sim = scorer.similarity(x, t)
    return _result(task.name, metrics.retrieval_recall(sim, t2i, ks), len(x), skipped,
                   truncated, metrics.retrieval_recall(
                       np.broadcast_to(np.float32(0), sim.shape), t2i, ks),
                   n_captions=len(t2i))


def class_embeddings(scorer: Scorer, classnames: Sequence[str], templates: Sequence[str],
                     truncated: Skipped, batch_size: int = 256) -> np.ndarray:
    """`[C, D]` class embeddings: the mean of the L2-normalised embeddings of a class's
    prompts, renormalised (CLIP's prompt ensembling)."""
    texts = [tpl.format(c) for c in classnames for tpl in templates]
    names = [f"class {c!r} prompt {tpl!r}" for c in classnames for tpl in templates]
    emb = np.concatenate([_embed_texts(scorer, [texts[i] for i in idx], [names[i] for i in idx],
                                       truncated)
                          for idx in _chunks(len(texts), batch_size)])
    emb = _normalize(emb).reshape(len(classnames), len(templates), -1).mean(axis=1)
    return _normalize(emb)


def run_classification(scorer: Scorer, task: ClassificationTask, batch_size: int = 256,
                       ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Zero-shot classification: each image against the `[C, D]` `class_embeddings`.

    Returns:
      The result dict; metrics `top{k}` (chance k / C) and `num_classes`.
    """
    skipped, truncated = Skipped(), Skipped()
    skipped.extend(task.skipped)
    classes = class_embeddings(scorer, task.classnames, task.templates, truncated, batch_size)
    sources = task.sources
    names = (task.image_paths if task.image_paths is not None
             else [f"{task.source or task.name} #{i}" for i in range(len(task))])
    logits, labels = [], []
    for idx in _chunks(len(task), batch_size):
        x, ok = _embed_images(scorer, [sources[i] for i in idx], [names[i] for i in idx],
                              skipped)
        if ok.any():
            logits.append(np.asarray(scorer.similarity(x, classes)))
            labels.append(np.asarray(task.labels)[idx[ok]])
    _need_items(task.name, sum(map(len, labels)), skipped)
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    return _result(task.name, metrics.topk_accuracy(logits, labels, ks), len(labels), skipped,
                   truncated, metrics.topk_accuracy(
                       np.broadcast_to(np.float32(0), logits.shape), labels, ks),
                   num_classes=len(task.classnames))


def run_sugarcrepe(scorer: Scorer, tasks: dict[str, PairTask], batch_size: int = 256
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
    return _result("sugarcrepe", values, sum(r["n"] for r in results.values()), skipped,
                   truncated, dict.fromkeys(values, 0.5), log=False, subsets=results)
