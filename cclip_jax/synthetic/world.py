"""Writing a whole world to disk: training shards, CSV, evaluation items, `world.json`.

Layout of `out_dir`:

    world.json                       settings and counts; written last (its presence = complete)
    train/00000.tar ...              webdataset shards: KEY.png, KEY.txt, KEY.json
    train.csv                        image,caption (paths relative to out_dir)
    train_images/00000/KEY.png ...   the PNGs train.csv points to
    eval/<split>/<kind>.jsonl        items; image paths relative to out_dir
    eval/<split>/images/<kind>/...   their PNGs

Everything is first written under a private staging folder inside `out_dir`, moved into place
under a file lock (`out_dir/.lock`), and `world.json` comes last, so half-written output never
looks complete. Calling `write_world` again with the same settings is a no-op; with other
settings it raises. The world is a pure function of its settings (any worker count gives the
same bytes), so concurrent writers cannot disagree.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cclip_jax.synthetic.grammar import knobs_for, make_caption
from cclip_jax.synthetic.items import (
    GROUP_KINDS,
    KINDS,
    PAIR_KINDS,
    GroupItem,
    PairItem,
    make_item,
)
from cclip_jax.synthetic.rendering import encode_png, render
from cclip_jax.synthetic.scene import Scene
from cclip_jax.synthetic.splits import (
    EVAL_SPLITS,
    HELD_OUT_PAIRS,
    HELD_OUT_TRIPLES,
    STREAM_CAPTION,
    sample_scene,
    stream_rng,
)
from cclip_jax.synthetic.writers import (
    ShardWriter,
    json_bytes,
    read_jsonl,
    write_bytes,
    write_csv,
    write_json_atomic,
    write_jsonl,
)

FORMAT_VERSION = 2  # 2: item captions of equal novelty (items.py)
WORLD_FILE = "world.json"
_OUTPUTS = ("train", "train.csv", "train_images", "eval")  # everything but world.json
_EVAL_CHUNK = 100  # items per evaluation task


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare arrays ambiguously
class Example:
    """One training example: its scene graph, caption and uint8 `[S, S, 3]` image."""

    index: int
    scene: Scene
    caption: str
    image: np.ndarray


def training_example(
    seed: int, index: int, preset: Any = "natural", image_size: int = 64
) -> Example:
    """Training example `index` of the world `seed`, regenerated alone (no files needed)."""
    scene = sample_scene(seed, index, "train")
    caption = make_caption(scene, preset, stream_rng(seed, STREAM_CAPTION, "train", index))
    return Example(index, scene, caption, render(scene, image_size))


def example_key(index: int) -> str:
    return f"{index:08d}"


@dataclasses.dataclass(frozen=True)
class _Settings:
    seed: int
    num_train: int
    preset: str
    image_size: int
    num_eval: int
    shard_size: int
    csv: bool = True

    def check(self) -> None:
        knobs_for(self.preset)  # raises naming the known presets
        for name in ("seed", "num_eval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        for name in ("num_train", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.image_size < 8:
            raise ValueError(f"image_size: expected >= 8 pixels, got {self.image_size}")

    def as_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}


def _train_shard(settings: _Settings, staging: str, shard: int) -> list[tuple[str, str]]:
    """Writes shard `shard` (tar, and loose PNGs for the CSV); returns its CSV rows."""
    root = Path(staging)
    start = shard * settings.shard_size
    stop = min(start + settings.shard_size, settings.num_train)
    rows = []
    image_dir = root / "train_images" / f"{shard:05d}"
    if settings.csv:
        image_dir.mkdir(parents=True, exist_ok=True)
    with ShardWriter(root / "train" / f"{shard:05d}.tar") as tar:
        for index in range(start, stop):
            ex = training_example(settings.seed, index, settings.preset, settings.image_size)
            key = example_key(index)
            png = encode_png(ex.image)
            meta = ex.scene.to_json() | {
                "key": key,
                "caption": ex.caption,
                "preset": settings.preset,
                "split": "train",
                "seed": settings.seed,
                "index": index,
            }
            tar.add(key, {"png": png, "txt": ex.caption.encode(), "json": json_bytes(meta)})
            if settings.csv:
                # One small file per example is the costliest step on most file systems.
                write_bytes(image_dir / f"{key}.png", png)
                rows.append((f"train_images/{shard:05d}/{key}.png", ex.caption))
    return rows


def _eval_chunk(
    settings: _Settings, staging: str, split: str, kind: str, start: int
) -> list[dict[str, Any]]:
    """Writes the images of items `start ..` of one kind; returns their JSONL rows."""
    rows = []
    rel_dir = f"eval/{split}/images/{kind}"
    for n in range(start, min(start + _EVAL_CHUNK, settings.num_eval)):
        item = make_item(settings.seed, split, kind, n)
        scenes = item.scenes if isinstance(item, GroupItem) else (item.scene,)
        suffixes = ("_0", "_1") if len(scenes) == 2 else ("",)
        paths = [f"{rel_dir}/{n:05d}{suffix}.png" for suffix in suffixes]
        (Path(staging) / rel_dir).mkdir(parents=True, exist_ok=True)
        for path, scene in zip(paths, scenes, strict=True):
            write_bytes(Path(staging) / path, encode_png(render(scene, settings.image_size)))
        if isinstance(item, PairItem):
            row = {"image": paths[0], "positive": item.positive, "negative": item.negative}
            row["scene"] = item.scene.to_json()
        else:
            row = {"images": paths, "captions": list(item.captions)}
            row["scenes"] = [s.to_json() for s in item.scenes]
        rows.append({"kind": kind, "index": n, **row})
    return rows


def _run_task(task: tuple[str, tuple[Any, ...]]) -> tuple[str, tuple[Any, ...], Any, int]:
    """Runs one task in a worker; returns it with its result and its number of images."""
    name, args = task
    if name == "train":
        rows = _train_shard(*args)
        return name, args, rows, len(rows)
    rows = _eval_chunk(*args)
    return name, args, rows, sum(len(r.get("images", [0])) for r in rows)


def _tasks(settings: _Settings, staging: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
    for shard in range(math.ceil(settings.num_train / settings.shard_size)):
        yield "train", (settings, staging, shard)
    for split in EVAL_SPLITS:
        for kind in KINDS:
            for start in range(0, settings.num_eval, _EVAL_CHUNK):
                yield "eval", (settings, staging, split, kind, start)


def _existing(out: Path, settings: _Settings) -> dict[str, Any] | None:
    """The finished world in `out`, if any; raises if it was made with other settings."""
    path = out / WORLD_FILE
    if not path.exists():
        return None
    world = json.loads(path.read_text(encoding="utf-8"))
    old, new = world.get("settings", {}), settings.as_json()
    diff = [f"{k}: {old.get(k)!r} there, {v!r} asked" for k, v in new.items() if old.get(k) != v]
    if diff:
        raise ValueError(f"{out} already holds a different world ({'; '.join(diff)})")
    return world


def write_world(
    out_dir: str | os.PathLike[str],
    num_train: int,
    preset: str = "natural",
    seed: int = 0,
    image_size: int = 64,
    num_eval: int = 100,
    workers: int | None = None,
    shard_size: int = 1000,
    csv: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Writes a world to `out_dir` (layout in the module docstring); returns `world.json`.

    Args:
      num_train: training examples (indices `0 .. num_train-1` of split `train`).
      preset: caption preset for training captions (`clean` or `natural`).
      num_eval: items per kind and evaluation split.
      workers: processes (default: all CPUs); 1 runs in this process.
      shard_size: examples per tar shard.
      csv: also write `train.csv` and the loose PNGs it points to (the same examples as the
        shards; skip them for large worlds, where one file per example is slow).
    Safe to call again: a finished world with the same settings is returned as is.
    """
    settings = _Settings(seed, num_train, preset, image_size, num_eval, shard_size, csv)
    settings.check()
    out = Path(out_dir)
    if (world := _existing(out, settings)) is not None:
        return world
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        (staging / "train").mkdir()
        shard_rows: dict[int, list[tuple[str, str]]] = {}
        eval_rows: dict[tuple[str, str], list[dict[str, Any]]] = {
            (split, kind): [] for split in EVAL_SPLITS for kind in KINDS
        }
        for split in EVAL_SPLITS:
            (staging / "eval" / split).mkdir(parents=True)
        tasks = list(_tasks(settings, str(staging)))
        workers = (os.cpu_count() or 1) if workers is None else workers
        images_per_item = len(PAIR_KINDS) + 2 * len(GROUP_KINDS)
        total = num_train + num_eval * len(EVAL_SPLITS) * images_per_item
        with tqdm(total=total, unit="img", disable=not progress, desc="synthetic world") as bar:
            for name, args, rows, count in _map(tasks, workers):
                if name == "train":
                    shard_rows[args[2]] = rows
                else:
                    eval_rows[args[2], args[3]].extend(rows)
                bar.update(count)
        if csv:
            lines = [r for k in sorted(shard_rows) for r in shard_rows[k]]
            write_csv(staging / "train.csv", lines)
        for (split, kind), rows in eval_rows.items():
            write_jsonl(staging / "eval" / split / f"{kind}.jsonl", sorted(rows, key=_index))
        # Several processes may build the same world at once (e.g. every host of a job filling
        # a shared cache): the lock lets exactly one of them move its files into place.
        with open(out / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (world := _existing(out, settings)) is not None:
                return world  # another process finished the same world meanwhile
            for name in _OUTPUTS:
                # Leftovers of an interrupted run (no world.json, so never complete) go.
                _remove(out / name)
                if (staging / name).exists():
                    os.replace(staging / name, out / name)
            world = _world_json(settings, num_shards=len(shard_rows))
            write_json_atomic(out / WORLD_FILE, world)
            return world
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _index(row: dict[str, Any]) -> int:
    return row["index"]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _map(tasks: list[tuple[str, tuple[Any, ...]]], workers: int) -> Iterator[Any]:
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_run_task, tasks)
        return
    # spawn, not fork: the parent may have started JAX threads, which fork would copy broken.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(_run_task, tasks)


def _world_json(settings: _Settings, num_shards: int) -> dict[str, Any]:
    return {
        "settings": settings.as_json(),
        "knobs": dataclasses.asdict(knobs_for(settings.preset)),
        "train": {
            "shards": [f"train/{s:05d}.tar" for s in range(num_shards)],
            "csv": "train.csv" if settings.csv else None,
            "num_examples": settings.num_train,
        },
        "eval": {
            split: {kind: f"eval/{split}/{kind}.jsonl" for kind in KINDS} for split in EVAL_SPLITS
        },
        "held_out_pairs": sorted(map(list, HELD_OUT_PAIRS)),
        "held_out_triples": sorted(map(list, HELD_OUT_TRIPLES)),
    }


def load_items(out_dir: str | os.PathLike[str], split: str, kind: str) -> list[dict[str, Any]]:
    """The JSONL rows of one item set of a written world."""
    return read_jsonl(Path(out_dir) / "eval" / split / f"{kind}.jsonl")
