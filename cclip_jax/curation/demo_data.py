"""The demo's data: a synthetic world and its curation, generated once into a cache folder.

`ensure_demo_data(config)` returns `config.data.curated_dir` when it is set; otherwise it writes
the synthetic world described by `config.data.synthetic` (idempotent, `write_world`) and curates
it with `config.data.curation` overrides of `configs/curate.py` (batch size = `config.batch_size`)
under `config.data.cache_dir`. Both folders are named by a hash of their settings and format
versions, so a changed config or curator never reuses stale data, and a finished curation
(manifest present) is reused as is.

An explicit step, taken by whoever starts training on the demo (`python -m cclip_jax.main`, the
experiments, the benchmarks); training itself only reads `config.data.curated_dir`:

    config.data.curated_dir = demo_data.ensure_demo_data(config)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from typing import Any

import ml_collections

from cclip_jax.curation import local_runner, manifest, settings, shards
from cclip_jax.synthetic import write_world
from cclip_jax.synthetic.world import FORMAT_VERSION


def _stage(line: str) -> None:
    """A console line for a stage of building the demo data (minutes for a large world)."""
    print(f"demo data: {line}", file=sys.stderr, flush=True)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def curation_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`configs/curate.py` with `config.data.curation` overrides and `config.batch_size`."""
    cur = settings.default_config()
    for key, value in config.data.curation.items():
        if key not in cur:
            raise ValueError(
                f"config.data.curation.{key} is not a curation setting (see configs/curate.py)"
            )
        cur[key] = value
    cur.batch_size = config.batch_size
    cur.progress = False
    return cur


def ensure_demo_data(config: ml_collections.ConfigDict) -> str:
    """The curated folder to train on: `config.data.curated_dir`, else the demo's (its world
    and curation generated if not cached, each stage announced by one line on stderr).

    Raises:
      ValueError: naming the field, for a `config.data.curation` key that is no curation
        setting (before anything is written).
    """
    if config.data.curated_dir:
        return config.data.curated_dir
    cache = os.path.expanduser(config.data.cache_dir)
    world_settings = dict(config.data.synthetic)
    # The world's format version is part of the name: a cached world of an older format is
    # regenerated beside it, never reused.
    world_dir = os.path.join(cache, f"world-{_digest([FORMAT_VERSION, world_settings])}")
    cur = curation_config(config)
    cur_dir = os.path.join(
        cache,
        "curated-"
        + _digest([FORMAT_VERSION, manifest.CURATOR_VERSION, world_settings, cur.to_dict()]),
    )
    os.makedirs(cache, exist_ok=True)
    # One writer at a time (parallel tests, several local processes); the others then reuse.
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(world_dir, "world.json")):
            _stage(
                f"building the synthetic world ({world_settings['num_train']} pairs, "
                f"{world_settings['preset']} captions) in {world_dir}"
            )
        write_world(
            world_dir,
            num_train=world_settings["num_train"],
            preset=world_settings["preset"],
            seed=world_settings["seed"],
            image_size=world_settings["image_size"],
            num_eval=world_settings["num_eval"],
            workers=1,
            csv=False,
            progress=False,
        )
        if not os.path.exists(os.path.join(cur_dir, shards.MANIFEST)):
            _stage(f"curating it into batches of {cur.batch_size} in {cur_dir}")
            local_runner.run(cur, os.path.join(world_dir, "train"), "webdataset", cur_dir)
    return cur_dir
