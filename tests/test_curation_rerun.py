"""Re-curating into the same `--out`: no stale shards survive, and no half-written folder
ever looks complete."""

import csv
import glob
import os

import numpy as np
import pytest

from cclip_jax.curation import CuratedShards, local_runner, read_batches, settings, shards
from cclip_jax.evaluation import suite

COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["square", "circle", "triangle"]


def write_csv(path, n, seed):
    rng = np.random.default_rng(seed)
    caps = [
        f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} left of a {rng.choice(SHAPES)}"
        for _ in range(n)
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows([f"{i}.png", c] for i, c in enumerate(caps))
    return str(path)


def config():
    c = settings.default_config("small")
    c.progress = False
    c.caption_only = True  # no images needed: the test is about the output folder
    c.batches_per_shard = 1  # one shard per batch, so the shard count follows the input size
    return c


def shard_files(out):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "batches-*")))


def test_smaller_recuration_removes_stale_shards(tmp_path):
    out = str(tmp_path / "out")
    big = local_runner.run(config(), write_csv(tmp_path / "big.csv", 32, 0), "csv", out)
    assert len(big["shards"]) == 4 and len(shard_files(out)) == 4
    (tmp_path / "out" / "notes.txt").write_text("mine")  # not the curator's: must survive

    small = local_runner.run(config(), write_csv(tmp_path / "small.csv", 16, 1), "csv", out)
    assert len(small["shards"]) == 2
    assert shard_files(out) == [s["file"] for s in small["shards"]]
    assert sorted(os.listdir(out)) == sorted(
        [*shard_files(out), shards.MANIFEST, shards.TOKENIZER, "notes.txt"]
    )
    # A reader that globs the folder (the evaluation's training captions) sees only this run.
    written = [c for b in read_batches(out) for c in b["caption"]]
    assert suite.train_captions(out) == written and len(written) == 16


def test_failed_recuration_never_looks_complete(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    local_runner.run(config(), write_csv(tmp_path / "a.csv", 32, 0), "csv", out)

    def crash(self, *args):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(shards.ShardWriter, "write", crash)
    with pytest.raises(RuntimeError, match="mid-write"):
        local_runner.run(config(), write_csv(tmp_path / "b.csv", 16, 1), "csv", out)
    with pytest.raises(FileNotFoundError, match="not a complete"):
        CuratedShards(out)
    assert shard_files(out) == []  # the first run's shards are gone too, not mixed in


def test_clear_previous_removes_only_curator_names(tmp_path):
    names = [
        "batches-00000.array_record",
        "batches-123456.array_record",
        shards.MANIFEST,
        f".{shards.MANIFEST}.tmp",
        shards.TOKENIZER,
        "batches-old.array_record",
        "batches-00000.array_record.bak",
        "data.csv",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = shards.clear_previous(str(tmp_path))
    assert removed == sorted(
        ["batches-00000.array_record", "batches-123456.array_record", f".{shards.MANIFEST}.tmp"]
    )
    assert sorted(os.listdir(tmp_path)) == sorted(
        [shards.TOKENIZER, "batches-old.array_record", "batches-00000.array_record.bak", "data.csv"]
    )
    assert shards.clear_previous(str(tmp_path / "new")) == []  # a folder not yet made
