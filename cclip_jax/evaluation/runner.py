"""What every task runner (`tasks`, `retrieval`) shares: the `Scorer` it needs of a model,
chunked embedding of a task's images and texts, and the result dict it returns.

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

from cclip_jax.evaluation.images import Box, ImageSource, Skipped, load_images

TRUNCATED = "longer than the text length, cut"


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


def chunks(n: int, batch_size: int) -> list[np.ndarray]:
    """`range(n)` in order as int index arrays of at most `batch_size` each."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def embed_images(
    scorer: Scorer,
    sources: Sequence[ImageSource],
    names: Sequence[str],
    skipped: Skipped,
    boxes: Sequence[Box] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One chunk: (`[n_ok, D]` embeddings, bool `[n]` ok); failures go into `skipped`."""
    images, ok, failed = load_images(sources, scorer.image_size, boxes, names)
    skipped.extend(failed)
    emb = scorer.embed_images(images[ok]) if ok.any() else np.zeros((0, 0), np.float32)
    return np.asarray(emb, np.float32), ok


def embed_texts(
    scorer: Scorer, texts: Sequence[str], names: Sequence[str], truncated: Skipped
) -> np.ndarray:
    """`[n]` texts -> `[n, D]`; the cut ones are named in `truncated`."""
    emb, cut = scorer.embed_texts(list(texts))
    for i in np.flatnonzero(cut):
        truncated.add(names[i], TRUNCATED)
    return np.asarray(emb, np.float32)


def need_items(name: str, n: int, skipped: Skipped) -> None:
    """Fails, naming the skips, when none of a task's `n` items could be evaluated."""
    if n == 0:
        raise ValueError(f"{name}: no item could be evaluated ({skipped.note()})")


def result(
    name: str,
    values: dict[str, float],
    n: int,
    skipped: Skipped,
    truncated: Skipped,
    chance: dict[str, float],
    log: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """The result dict of the module docstring; logs the skips and cuts unless `log` is False."""
    if log and skipped.count:
        logging.warning("%s: %s", name, skipped.note())
    if log and truncated.count:
        logging.warning(
            "%s: %d captions %s (still evaluated): %s",
            name,
            truncated.count,
            TRUNCATED,
            ", ".join(truncated.examples),
        )
    return {
        "name": name,
        "metrics": values,
        "n": int(n),
        "skipped": skipped.count,
        "skipped_examples": list(skipped.examples),
        "truncated": truncated.count,
        "truncated_examples": list(truncated.examples),
        "chance": chance,
        **extra,
    }
