"""Loaders of external benchmarks, in their published file formats, into plain task objects.

No model and no JAX here: a loader parses the benchmark's files, checks up front which image
files exist (so the number of skipped items is known before any model runs) and returns a task
holding image paths and captions (`cclip_jax.evaluation.task_types`). Task runners
(`cclip_jax.evaluation.tasks`, `cclip_jax.evaluation.retrieval`) embed and score.

Bad input:
- a missing item file or image folder raises `FileNotFoundError` naming the path;
- a file not in the published format raises `FormatError` naming the file, the item (id, index
  or line number) and the missing or mistyped field;
- missing image files (a partial image folder) are skipped: the task holds the other items and
  a `Skipped` record (count, first few file names, reason).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cclip_jax.evaluation.images import (
    MISSING,
    NO_CAPTION,
    ClassificationTask,
    FormatError,
    Skipped,
    existing,
    load_image_folder,
    load_tfds_classification,
    require_dir,
)
from cclip_jax.evaluation.task_types import GroupTask, PairTask, RetrievalTask

# The classification loaders live with the image code (images.py); they are re-exported, with
# the task they return and the error and skip records every loader uses, so that every loader
# is reachable from this module. The other task types are in task_types.py.
__all__ = [
    "ARO_ATTRIBUTION_MIN_GROUP",
    "SUGARCREPE_SUBSETS",
    "ClassificationTask",
    "FormatError",
    "Skipped",
    "load_aro",
    "load_image_folder",
    "load_karpathy",
    "load_sugarcrepe",
    "load_tfds_classification",
    "load_winoground",
]

SUGARCREPE_SUBSETS = (
    "add_att",
    "add_obj",
    "replace_att",
    "replace_obj",
    "replace_rel",
    "swap_att",
    "swap_obj",
)
# ARO's VG-Attribution evaluator leaves attribute pairs with fewer than 25 items out of its
# per-attribute table (dataset_zoo/aro_datasets.py, VG_Attribution.evaluate_scores).
ARO_ATTRIBUTION_MIN_GROUP = 25


# ------------------------------------------------------------------------------ parsing


def _read_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise FormatError(
                f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
            ) from e


def _field(item: Any, key: str, path: str, where: str, types: Any = str) -> Any:
    """`item[key]`, checked: the error names the file, the item and the field."""
    if not isinstance(item, dict):
        raise FormatError(f"{path}: {where} is a {type(item).__name__}, expected an object")
    if key not in item:
        raise FormatError(f"{path}: {where}: missing field {key!r} (fields: {sorted(item)})")
    value = item[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise FormatError(f"{path}: {where}: field {key!r} has type {type(value).__name__}")
    return value


def _split_missing(paths: Sequence[str], names: Sequence[str]) -> tuple[np.ndarray, Skipped]:
    """bool `[N]` keep mask (image files that exist) and the record of the others."""
    keep = existing(paths)
    skipped = Skipped()
    for i in np.flatnonzero(~keep):
        skipped.add(names[i], MISSING)
    return keep, skipped


def _kept(values: Sequence[Any] | None, keep: np.ndarray) -> list[Any] | None:
    return None if values is None else [v for v, k in zip(values, keep, strict=True) if k]


# ------------------------------------------------------------------------------ loaders


def load_sugarcrepe(
    json_dir: str, image_dir: str, subsets: Sequence[str] | None = None
) -> dict[str, PairTask]:
    """SugarCrepe (RAIVNLab/sugar-crepe `data/`): one `PairTask` per subset file.

    Args:
      json_dir: folder of `<subset>.json`, each `{id: {"filename", "caption",
        "negative_caption"}}`.
      image_dir: the COCO `val2017/` folder (`filename` is a file in it).
      subsets: subset names (default: all seven, `SUGARCREPE_SUBSETS`).
    """
    subsets = SUGARCREPE_SUBSETS if subsets is None else tuple(subsets)
    unknown = sorted(set(subsets) - set(SUGARCREPE_SUBSETS))
    if unknown:
        raise ValueError(f"unknown SugarCrepe subsets {unknown}; known: {SUGARCREPE_SUBSETS}")
    require_dir(image_dir, "COCO val2017 image")
    tasks = {}
    for subset in subsets:
        path = os.path.join(json_dir, f"{subset}.json")
        data = _read_json(path)
        if not isinstance(data, dict):
            raise FormatError(
                f"{path}: expected an object mapping item ids to items, got a {type(data).__name__}"
            )
        ids, files, pos, neg = [], [], [], []
        for key, item in data.items():
            where = f"item {key!r}"
            files.append(_field(item, "filename", path, where))
            pos.append(_field(item, "caption", path, where))
            neg.append(_field(item, "negative_caption", path, where))
            ids.append(str(key))
        paths = [os.path.join(image_dir, f) for f in files]
        keep, skipped = _split_missing(paths, files)
        tasks[subset] = PairTask(
            subset,
            _kept(paths, keep),
            _kept(pos, keep),
            _kept(neg, keep),
            _kept(ids, keep),
            skipped=skipped,
            source=path,
        )
    return tasks


def load_aro(json_path: str, image_dir: str, name: str) -> PairTask:
    """ARO's VG-Relation / VG-Attribution (mertyg/vision-language-models-are-bows).

    Args:
      json_path: `visual_genome_relation.json` or `visual_genome_attribution.json`: a list of
        `{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption",
        "false_caption"}` plus `"relation_name"` (relation) or `"attributes"` (attribution).
      image_dir: the folder `image_path` is relative to (ARO's `images/`).
      name: task name.

    Returns:
      A `PairTask` with the crop boxes (ARO scores the crop) and, as `groups`, the relation or
      the `"<attr0>_<attr1>"` pair of each item (ids are list indices).
    """
    data = _read_json(json_path)
    if not isinstance(data, list) or not data:
        raise FormatError(
            f"{json_path}: expected a non-empty list of items, got {type(data).__name__}"
        )
    first = data[0] if isinstance(data[0], dict) else {}
    if "relation_name" not in first and "attributes" not in first:
        raise FormatError(
            f"{json_path}: item 0 has neither 'relation_name' (VG-Relation) nor "
            "'attributes' (VG-Attribution)"
        )
    relation = "relation_name" in first
    require_dir(image_dir, "ARO image")
    paths, pos, neg, boxes, groups = [], [], [], [], []
    number = (int, float)
    for i, item in enumerate(data):
        where = f"item {i}"
        paths.append(os.path.join(image_dir, _field(item, "image_path", json_path, where)))
        boxes.append(
            tuple(float(_field(item, f"bbox_{c}", json_path, where, number)) for c in "xywh")
        )
        pos.append(_field(item, "true_caption", json_path, where))
        neg.append(_field(item, "false_caption", json_path, where))
        if relation:
            groups.append(_field(item, "relation_name", json_path, where))
        else:
            attrs = _field(item, "attributes", json_path, where, list)
            if len(attrs) != 2:
                raise FormatError(
                    f"{json_path}: {where}: field 'attributes' must hold 2 "
                    f"attributes, got {attrs!r}"
                )
            groups.append(f"{attrs[0]}_{attrs[1]}")
    ids = [str(i) for i in range(len(data))]
    keep, skipped = _split_missing(
        paths, [f"{p} (item {i})" for i, p in zip(ids, paths, strict=True)]
    )
    return PairTask(
        name,
        _kept(paths, keep),
        _kept(pos, keep),
        _kept(neg, keep),
        _kept(ids, keep),
        boxes=_kept(boxes, keep),
        skipped=skipped,
        groups=_kept(groups, keep),
        min_group_size=1 if relation else ARO_ATTRIBUTION_MIN_GROUP,
        source=json_path,
    )


def load_winoground(examples_jsonl: str, image_dir: str, name: str = "winoground") -> GroupTask:
    """Winoground (facebook/winoground `data/`).

    Args:
      examples_jsonl: `examples.jsonl`, one item a line: `{"id", "caption_0", "caption_1",
        "image_0", "image_1", "tag", ...}`; image names have no extension.
      image_dir: folder of `<image name>.png`.
    """
    if not os.path.isfile(examples_jsonl):
        raise FileNotFoundError(f"{examples_jsonl} does not exist")
    require_dir(image_dir, "Winoground image")
    ids, images, captions, tags = [], [], [], []
    with open(examples_jsonl, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{examples_jsonl}: {where}: not valid JSON ({e.msg})") from e
            ids.append(str(_field(item, "id", examples_jsonl, where, (int, str))))
            captions.append(
                tuple(_field(item, f"caption_{j}", examples_jsonl, where) for j in (0, 1))
            )
            images.append(
                tuple(
                    os.path.join(
                        image_dir, _field(item, f"image_{j}", examples_jsonl, where) + ".png"
                    )
                    for j in (0, 1)
                )
            )
            tags.append(str(item.get("tag", "")))
    if not ids:
        raise FormatError(f"{examples_jsonl}: no items")
    found = existing([p for pair in images for p in pair]).reshape(-1, 2)
    keep = found.all(axis=1)
    skipped = Skipped()
    for i in np.flatnonzero(~keep):
        missing = [os.path.basename(p) for p, ok in zip(images[i], found[i], strict=True) if not ok]
        skipped.add(f"id {ids[i]}: {', '.join(missing)}", MISSING)
    return GroupTask(
        name,
        _kept(images, keep),
        _kept(captions, keep),
        _kept(ids, keep),
        skipped=skipped,
        tags=_kept(tags, keep),
        source=examples_jsonl,
    )


def load_karpathy(
    json_path: str, image_root: str, split: str = "test", name: str | None = None
) -> RetrievalTask:
    """COCO / Flickr30k retrieval from a Karpathy split file.

    Args:
      json_path: `dataset_coco.json` / `dataset_flickr30k.json`: `{"images": [{"filepath"
        (COCO only), "filename", "split", "sentences": [{"raw", ...}, ...], ...}],
        "dataset"}`.
      image_root: image path is `image_root/filepath/filename` (or `image_root/filename`).
      split: `"test"`, `"val"`, `"train"` or `"restval"`.
      name: task name (default `"<dataset>_<split>"`).
    """
    data = _read_json(json_path)
    entries = _field(data, "images", json_path, "top level", list)
    require_dir(image_root, "retrieval image")
    skipped = Skipped()
    paths, ids, captions, caption_image = [], [], [], []
    for i, item in enumerate(entries):
        where = f"images[{i}]"
        if _field(item, "split", json_path, where) != split:
            continue
        filename = _field(item, "filename", json_path, where)
        path = os.path.join(
            image_root,
            _field(item, "filepath", json_path, where) if "filepath" in item else "",
            filename,
        )
        sentences = _field(item, "sentences", json_path, where, list)
        raws = [
            _field(s, "raw", json_path, f"{where}.sentences[{j}]") for j, s in enumerate(sentences)
        ]
        if not raws:
            skipped.add(filename, NO_CAPTION)
        elif not os.path.exists(path):
            skipped.add(filename, MISSING)
        else:
            caption_image.extend([len(paths)] * len(raws))
            captions.extend(raws)
            paths.append(path)
            ids.append(filename)
    if not paths and not skipped.count:
        raise FormatError(f"{json_path}: no images in split {split!r}")
    dataset = data.get("dataset", os.path.splitext(os.path.basename(json_path))[0])
    return RetrievalTask(
        name or f"{dataset}_{split}",
        paths,
        captions,
        np.asarray(caption_image, np.int64),
        ids,
        skipped=skipped,
        source=json_path,
    )
