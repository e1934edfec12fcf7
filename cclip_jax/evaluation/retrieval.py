"""Whole-set task runners: image <-> text retrieval and zero-shot classification.

Both embed every image of the set (chunk by chunk) and score one similarity matrix: images
against all captions (`[N_img, N_txt]`), or against one prompt-ensembled embedding per class
(`[N, C]`). Each returns the JSON-ready result dict of `cclip_jax.evaluation.runner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cclip_jax.evaluation import metrics
from cclip_jax.evaluation.images import ClassificationTask, ImageSource, Skipped
from cclip_jax.evaluation.runner import (
    Scorer,
    chunks,
    embed_images,
    embed_texts,
    need_items,
    result,
)
from cclip_jax.evaluation.task_types import RetrievalTask


def _image_embeddings(
    scorer: Scorer,
    sources: Sequence[ImageSource],
    names: Sequence[str],
    skipped: Skipped,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """All images, chunk by chunk: (`[n_ok, D]` embeddings, bool `[N]` ok)."""
    embs, oks = [], []
    for idx in chunks(len(sources), batch_size):
        emb, ok = embed_images(scorer, [sources[i] for i in idx], [names[i] for i in idx], skipped)
        embs.extend([emb] if ok.any() else [])
        oks.append(ok)
    ok = np.concatenate(oks) if oks else np.zeros(0, bool)
    return (np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)), ok


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def run_retrieval(
    scorer: Scorer, task: RetrievalTask, batch_size: int = 256, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, Any]:
    """Image <-> text retrieval over the whole set (`[N_img, N_txt]` similarity).

    Returns:
      The result dict; metrics `i2t_r{k}`, `t2i_r{k}`; `n` images and `n_captions`. An image
      that fails to load is dropped with its captions.
    """
    skipped, truncated = Skipped(), Skipped()
    skipped.extend(task.skipped)
    x, ok = _image_embeddings(scorer, task.image_paths, task.image_paths, skipped, batch_size)
    need_items(task.name, int(ok.sum()), skipped)
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
    t = np.concatenate(
        [
            embed_texts(
                scorer,
                [task.captions[j] for j in chunk],
                [f"{source}: {task.ids[task.caption_image[j]]} caption {rank[j]}" for j in chunk],
                truncated,
            )
            for chunk in (txt_idx[c] for c in chunks(len(txt_idx), batch_size))
        ]
    )
    t2i = new_index[task.caption_image[txt_idx]]
    sim = scorer.similarity(x, t)
    return result(
        task.name,
        metrics.retrieval_recall(sim, t2i, ks),
        len(x),
        skipped,
        truncated,
        metrics.retrieval_recall(np.broadcast_to(np.float32(0), sim.shape), t2i, ks),
        n_captions=len(t2i),
    )


def class_embeddings(
    scorer: Scorer,
    classnames: Sequence[str],
    templates: Sequence[str],
    truncated: Skipped,
    batch_size: int = 256,
) -> np.ndarray:
    """`[C, D]` class embeddings: the mean of the L2-normalised embeddings of a class's
    prompts, renormalised (CLIP's prompt ensembling)."""
    texts = [tpl.format(c) for c in classnames for tpl in templates]
    names = [f"class {c!r} prompt {tpl!r}" for c in classnames for tpl in templates]
    emb = np.concatenate(
        [
            embed_texts(scorer, [texts[i] for i in idx], [names[i] for i in idx], truncated)
            for idx in chunks(len(texts), batch_size)
        ]
    )
    emb = _normalize(emb).reshape(len(classnames), len(templates), -1).mean(axis=1)
    return _normalize(emb)


def run_classification(
    scorer: Scorer, task: ClassificationTask, batch_size: int = 256, ks: Sequence[int] = (1, 5)
) -> dict[str, Any]:
    """Zero-shot classification: each image against the `[C, D]` `class_embeddings`.

    Returns:
      The result dict; metrics `top{k}` (chance k / C) and `num_classes`.
    """
    skipped, truncated = Skipped(), Skipped()
    skipped.extend(task.skipped)
    classes = class_embeddings(scorer, task.classnames, task.templates, truncated, batch_size)
    sources = task.sources
    names = (
        task.image_paths
        if task.image_paths is not None
        else [f"{task.source or task.name} #{i}" for i in range(len(task))]
    )
    logits, labels = [], []
    for idx in chunks(len(task), batch_size):
        x, ok = embed_images(scorer, [sources[i] for i in idx], [names[i] for i in idx], skipped)
        if ok.any():
            logits.append(np.asarray(scorer.similarity(x, classes)))
            labels.append(np.asarray(task.labels)[idx[ok]])
    need_items(task.name, sum(map(len, labels)), skipped)
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    return result(
        task.name,
        metrics.topk_accuracy(logits, labels, ks),
        len(labels),
        skipped,
        truncated,
        metrics.topk_accuracy(np.broadcast_to(np.float32(0), logits.shape), labels, ks),
        num_classes=len(task.classnames),
    )
