"""Evaluations on the synthetic world, where the scene graph is ground truth.

- Binding suite: every item kind of every evaluation split (`eval/<split>/<kind>.jsonl` of a
  world written by `cclip_jax.synthetic.write_world`): pair accuracy, Winoground-style
  text/image/group scores.
- Retrieval: evaluation scenes with several captions each, sampled by the world's grammar.
- Conditional retrieval: for a query image and a concept that holds in it (a colour, a shape, a
  colour-shape binding, a masked relation `<M> red <M> left of <M> blue <M>`), rank the other
  images by `cos(x_q ⊙ c, x_j ⊙ c)`; an image is relevant iff the oracle says the concept holds
  in it. Precision@k per concept type, and `plain_p<k>`: the same queries ranked by the plain
  `cos(x_q, x_j)`, the score a gate must beat to have learned anything.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from cclip_jax import synthetic as syn
from cclip_jax.evaluation import metrics
from cclip_jax.evaluation.images import load_images
from cclip_jax.evaluation.scorer import ModelScorer
from cclip_jax.evaluation.task_types import GroupTask, PairTask, RetrievalTask

CONCEPT_TYPES = ("colour", "shape", "colour_shape", "masked_relation")


def _path(world_dir: str, rel: str) -> str:
    return os.path.join(world_dir, rel)


def binding_task(world_dir: str, split: str, kind: str) -> PairTask | GroupTask:
    """The item set `split/kind` of a written world as a task (image paths made absolute)."""
    rows = syn.load_items(world_dir, split, kind)
    name, source = f"{split}/{kind}", os.path.join(world_dir, "eval", split, f"{kind}.jsonl")
    ids = [str(r["index"]) for r in rows]
    if kind in syn.GROUP_KINDS:
        return GroupTask(
            name,
            [tuple(_path(world_dir, p) for p in r["images"]) for r in rows],
            [tuple(r["captions"]) for r in rows],
            ids,
            source=source,
        )
    return PairTask(
        name,
        [_path(world_dir, r["image"]) for r in rows],
        [r["positive"] for r in rows],
        [r["negative"] for r in rows],
        ids,
        source=source,
    )


def scene_pool(
    world_dir: str, split: str, limit: int | None = None
) -> tuple[list[str], list[syn.Scene]]:
    """Distinct images of a split's pair items with their scenes (`limit` first ones)."""
    paths, scenes = [], []
    for kind in syn.PAIR_KINDS:
        for row in syn.load_items(world_dir, split, kind):
            paths.append(_path(world_dir, row["image"]))
            scenes.append(syn.Scene.from_json(row["scene"]))
    return paths[:limit], scenes[:limit]


def retrieval_task(
    world_dir: str, split: str, *, num_images: int, captions_per_image: int, preset: str
) -> RetrievalTask:
    """`num_images` evaluation scenes, each with `captions_per_image` grammar captions."""
    paths, scenes = scene_pool(world_dir, split, num_images)
    captions, owner = [], []
    for i, scene in enumerate(scenes):
        for k in range(captions_per_image):
            captions.append(syn.make_caption(scene, preset, k))
            owner.append(i)
    return RetrievalTask(
        f"synthetic_{split}",
        paths,
        captions,
        np.asarray(owner),
        [os.path.basename(p) for p in paths],
        source=os.path.join(world_dir, "eval", split),
    )


def query_concepts(scene: syn.Scene, index: int) -> dict[str, str]:
    """One concept of each type that holds in `scene` (deterministic in `index`)."""
    rng = random.Random(index)
    obj = rng.choice(scene.objects)
    out = {"colour": obj.colour, "shape": obj.shape, "colour_shape": f"{obj.colour} {obj.shape}"}
    relations = scene.relations()
    if relations:
        i, rel, j = rng.choice(relations)
        a, b = scene.objects[i], scene.objects[j]
        out["masked_relation"] = f"<M> {a.colour} <M> {rel} <M> {b.colour} <M>"
    return out


def conditional_retrieval(
    scorer: ModelScorer,
    world_dir: str,
    split: str,
    *,
    num_queries: int,
    pool_size: int,
    keep_rows: int = 4,
    top: int = 5,
) -> dict[str, Any]:
    """Precision@1/5/10 of gated image-image retrieval against the oracle.

    Queries are the first `num_queries` images of the split's pool (`pool_size` images); each
    query asks one concept of each type in `CONCEPT_TYPES`. Returns the runners' JSON layout
    with `metrics` (overall and per concept type) and `rows` (a few queries with their top
    results, image paths relative to `world_dir`) for the report.
    """
    paths, scenes = scene_pool(world_dir, split, pool_size)
    images, ok, skipped = load_images(paths, scorer.image_size)
    x = scorer.embed_images(images[ok]) if ok.any() else None
    paths = [p for p, good in zip(paths, ok, strict=True) if good]
    scenes = [s for s, good in zip(scenes, ok, strict=True) if good]
    queries = [
        (q, t, c)
        for q in range(min(num_queries, len(scenes)))
        for t, c in query_concepts(scenes[q], q).items()
    ]
    if x is None or not queries:
        raise ValueError(
            f"conditional retrieval on {world_dir}/{split}: no images to rank "
            f"({skipped.count} skipped)"
        )
    unique = sorted({c for _, _, c in queries})
    gates, cut = scorer.embed_concepts(unique)
    gate_of = dict(zip(unique, gates, strict=True))
    relevant_of = {c: np.array([bool(syn.holds(s, c)) for s in scenes]) for c in unique}
    n = len(scenes)
    scores = np.stack(
        [scorer.gated_similarity(x[q : q + 1], x, gate_of[c])[0] for q, _, c in queries]
    )
    relevant = np.stack([relevant_of[c] for _, _, c in queries])
    exclude = np.zeros((len(queries), n), bool)
    exclude[np.arange(len(queries)), [q for q, _, _ in queries]] = True
    # The same ranking by the plain cosine cos(x_q, x_j): if the gate does not beat it, the
    # gate has learned nothing the image embedding did not already rank by.
    plain = np.stack([scorer.similarity(x[q : q + 1], x)[0] for q, _, _ in queries])
    result = {
        "metrics": metrics.precision_at_k(scores, relevant, exclude=exclude),
        "n": len(queries),
        "skipped": skipped.count,
        "skipped_examples": skipped.examples,
        "truncated": int(cut.sum()),
        "truncated_examples": [c for c, t in zip(unique, cut, strict=True) if t],
    }
    base = relevant & ~exclude  # chance: the fraction of relevant candidates
    result["chance"] = {"p1": float(np.mean(base.sum(1) / (~exclude).sum(1)))}
    for key, value in metrics.precision_at_k(plain, relevant, exclude=exclude).items():
        result["metrics"][f"plain_{key}"] = value
    types = np.array([t for _, t, _ in queries])
    for t in CONCEPT_TYPES:
        sel = types == t
        if sel.any():
            for key, value in metrics.precision_at_k(
                scores[sel], relevant[sel], exclude=exclude[sel]
            ).items():
                result["metrics"][f"{t}_{key}"] = value
    result["rows"] = _rows(queries, scores, relevant, exclude, paths, world_dir, keep_rows, top)
    return result


def _rows(
    queries: Sequence[tuple[int, str, str]],
    scores: np.ndarray,
    relevant: np.ndarray,
    exclude: np.ndarray,
    paths: Sequence[str],
    world_dir: str,
    keep: int,
    top: int,
) -> list[dict[str, Any]]:
    """A few queries (one per concept type first) with their top results, for the report."""
    picked, seen = [], set()
    for r, (_, kind, _) in enumerate(queries):
        if kind not in seen:
            seen.add(kind)
            picked.append(r)
    rows = []
    for r in picked[:keep]:
        q, kind, concept = queries[r]
        order = [j for j in np.argsort(-scores[r], kind="stable") if not exclude[r, j]][:top]
        rows.append(
            {
                "query": os.path.relpath(paths[q], world_dir),
                "concept": concept,
                "type": kind,
                "results": [
                    {
                        "image": os.path.relpath(paths[j], world_dir),
                        "relevant": bool(relevant[r, j]),
                        "score": float(scores[r, j]),
                    }
                    for j in order
                ],
            }
        )
    return rows
