"""The gallery: the first rows of a few curated batches, each image with its caption and the
batch concepts its label row marks `+1` (shares), `-1` (known not to have) or `0` (unknown)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from cclip_jax.curation.shards import CuratedShards
from cclip_jax.report.assets import Assets
from cclip_jax.report.html import Markup, cell, image, join, note, table, tag

NUM_BATCHES, NUM_ROWS = 2, 8


def _chips(names: list[str], cls: str) -> Markup:
    return join((tag("span", n, cls=f"chip {cls}") for n in names), " ")


def _batch(shards: CuratedShards, index: int, num_rows: int, assets: Assets) -> list[Markup]:
    rows = shards.read_rows(index, 0, min(num_rows, shards.batch_size))
    k = int(rows["num_concepts"])
    concepts, labels = rows["concepts"][:k], np.asarray(rows["labels"])[:, :k]
    # How many of the shown rows share each concept: what makes the batch "curated".
    shared = Counter({c: int(n) for c, n in zip(concepts, (labels == 1).sum(0), strict=True) if n})
    body = []
    for r, (caption, data) in enumerate(zip(rows["caption"], rows["image"], strict=True)):
        src = assets.add_bytes(data, f"batch{index}")
        pos = [c for c, v in zip(concepts, labels[r], strict=True) if v == 1]
        neg = [c for c, v in zip(concepts, labels[r], strict=True) if v == -1]
        body.append(
            [
                image(src, caption, "px", "not an image"),
                caption,
                _chips(pos, "pos"),
                _chips(neg, "neg"),
                cell(str(int((labels[r] == 0).sum())), "num"),
            ]
        )
    summary = ", ".join(f"{c} ×{n}" for c, n in shared.most_common())
    return [
        tag("h3", f"Batch {index}: first {len(body)} of {shards.batch_size} rows, {k} concepts"),
        tag("p", f"Concepts shared by the rows shown: {summary or 'none'}."),
        table(["image", "caption", "+1 shares", "−1 known not", "0 unknown"], body),
    ]


def gallery_section(
    curated_dir: str | None,
    why_missing: str,
    assets: Assets,
    num_batches: int = NUM_BATCHES,
    num_rows: int = NUM_ROWS,
) -> list[Markup]:
    """The body of the gallery section, or a note saying why there is none.

    Args:
      curated_dir: a curated output folder, or None.
      why_missing: the note shown when `curated_dir` is None.
      assets: where the images are copied.
      num_batches, num_rows: how many batches, and rows of each, to show.
    """
    if not curated_dir:
        return [note(why_missing)]
    try:
        shards = CuratedShards(curated_dir)
    except (OSError, ValueError, KeyError) as e:
        return [note(f"No gallery: cannot read the curated folder {curated_dir}: {e}")]
    try:
        out = [
            tag(
                "p",
                f"From {os.path.abspath(curated_dir)} ({len(shards)} batches of "
                f"{shards.batch_size}). Green: concepts the row has (+1); red: concepts "
                "it is known not to have (−1); the last column counts unknown (0).",
            )
        ]
        for index in range(min(num_batches, len(shards))):
            out.extend(_batch(shards, index, num_rows, assets))
    except (OSError, ValueError, IndexError, RuntimeError) as e:  # a damaged shard: keep going
        out.append(note(f"Reading the curated batches failed: {e}"))
    else:
        if not len(shards):
            out.append(note("The curated folder holds no batches."))
    finally:
        shards.close()
    return out
