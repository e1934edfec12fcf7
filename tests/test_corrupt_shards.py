"""A curated shard that fails its checksum: named in one line (file and batch), the last good
step saved so that the repaired run resumes exactly, or skipped, counted and logged."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from cclip_jax import cli
from cclip_jax.curation.shards import CorruptShardError, CuratedShards
from cclip_jax.data.pipeline import make_global_batch
from cclip_jax.data.source import BatchSliceSource
from cclip_jax.run_folder.checkpoints import Checkpointer
from cclip_jax.run_folder.metrics import read_jsonl
from cclip_jax.training import trainer
from cclip_jax.training.corrupt import CorruptBatchError, next_batch

pytestmark = pytest.mark.usefixtures("compile_cache")

SHARD = "batches-00000.array_record"
STEPS = 8  # the smoke data has 8 batches: one epoch visits each once


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(256))
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def _corrupt_batches(folder: str) -> set[int]:
    shards = CuratedShards(folder)
    bad = set()
    for i in range(shards.num_batches):
        try:
            shards.read_rows(i)
        except CorruptShardError:
            bad.add(i)
    shards.close()
    return bad


def _corrupt_copy(src: str, dst: str, seed: int) -> tuple[int, int]:
    """Copies `src` to `dst` and flips 256 bytes inside one record chunk of its first shard,
    at the first offset that makes some (not all) of its batches unreadable and whose first
    bad training step (curated order of `seed`) is neither the first nor the last. Returns
    `(that step, its batch)`."""
    size = os.path.getsize(os.path.join(src, SHARD))
    for offset in range(4096, size // 2, 1024):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        _flip(os.path.join(dst, SHARD), offset)
        bad = _corrupt_batches(dst)
        if not bad or len(bad) == CuratedShards(dst).num_batches:
            continue
        source = BatchSliceSource(dst, seed=seed)
        steps = [s for s in range(STEPS) if "corrupt" in source[s]]
        if steps and 0 < steps[0] < STEPS - 1:
            return steps[0], source[steps[0]]["batch"]
    raise AssertionError("no offset corrupts a batch in the middle of the epoch")


def test_a_corrupt_batch_is_named_and_the_rest_reads(smoke_curated, tmp_path):
    dst = str(tmp_path / "bad")
    step, batch = _corrupt_copy(smoke_curated, dst, seed=0)
    shards = CuratedShards(dst)
    with pytest.raises(CorruptShardError) as e:
        shards.read_rows(batch)
    assert str(e.value).startswith(f"{os.path.join(dst, SHARD)}: batch {batch} is corrupt (")
    assert "\n" not in str(e.value)
    good = CuratedShards(smoke_curated)
    for i in sorted(set(range(shards.num_batches)) - _corrupt_batches(dst)):
        assert shards.read_rows(i)["caption"] == good.read_rows(i)["caption"]
    marker = BatchSliceSource(dst, seed=0)[step]
    assert marker == {"batch": batch, "element": step, "corrupt": str(e.value)}
    with pytest.raises(ValueError, match=f"data element {step}: .*batch {batch} is corrupt"):
        make_global_batch(marker, None)  # a marker has no arrays to lay out


def test_a_missing_shard_is_not_corruption(smoke_curated, tmp_path):
    """A file that cannot be read (here: gone) is named and raised, never marked corrupt, so
    skipping corrupt batches cannot drop a shard that is merely unavailable."""
    dst = str(tmp_path / "gone")
    shutil.copytree(smoke_curated, dst)
    os.remove(os.path.join(dst, SHARD))
    with pytest.raises(FileNotFoundError, match=f"{SHARD}, listed in manifest.json, is missing"):
        CuratedShards(dst).read_rows(0)
    source, good = BatchSliceSource(dst, seed=0), BatchSliceSource(smoke_curated, seed=0)
    in_shard = set(range(CuratedShards(dst).manifest["shards"][0]["num_batches"]))
    for step in range(STEPS):
        if good[step]["batch"] in in_shard:
            with pytest.raises(FileNotFoundError):
                source[step]
        else:
            assert source[step]["caption"] == good[step]["caption"]


class _Stream:
    """A stand-in Grain iterator over `elements` (get_state/set_state by position)."""

    def __init__(self, elements):
        self.elements, self.i = elements, 0

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]

    def __next__(self):
        self.i += 1
        return self.elements[(self.i - 1) % len(self.elements)]


def test_next_batch_names_rewinds_skips_and_gives_up():
    bad = {"batch": 7, "element": 1, "corrupt": "F: batch 7 is corrupt (x)"}
    stream = _Stream([{"batch": 0}, bad, {"batch": 2}])
    counts = {}
    assert next_batch(stream, 0, False, 3, counts) == {"batch": 0}
    with pytest.raises(CorruptBatchError, match=r"^step 2 \(data element 1\): F: batch 7 is"):
        next_batch(stream, 1, False, 3, counts)
    assert stream.i == 1  # back before the bad element
    assert next_batch(stream, 1, True, 3, counts) == {"batch": 2} and counts == {
        "corrupt_batches_skipped": 1
    }
    with pytest.raises(CorruptBatchError, match="4 corrupt batches in a row"):
        next_batch(_Stream([bad]), 0, True, 3, {})


def _config(smoke, curated: str, **data):
    c = smoke(total_steps=STEPS, checkpoint_every_steps=100, max_checkpoints=5)
    c.data.curated_dir = curated
    c.async_checkpoints = False
    c.eval.every_steps = -1
    for k, v in data.items():
        c.data[k] = v
    return c


def _losses(workdir: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


@pytest.mark.slow  # three smoke training runs each
@pytest.mark.parametrize("workers", [0, 2])  # the thread iterator, and Grain's worker processes
def test_a_run_stops_at_a_corrupt_batch_and_resumes_exactly_once_repaired(
    smoke, smoke_curated, tmp_path, workers
):
    dst = str(tmp_path / "curated")
    step, batch = _corrupt_copy(smoke_curated, dst, seed=0)
    run = str(tmp_path / "run")
    with pytest.raises(CorruptBatchError) as e:
        trainer.train_and_evaluate(_config(smoke, dst, num_workers=workers), run)
    line = cli.one_line(e.value)
    where = f"step {step + 1} (data element {step}): {os.path.join(dst, SHARD)}"
    assert f"{where}: batch {batch} is corrupt" in line
    assert "skip_corrupt_batches" in line and "\n" not in line
    ckpt = Checkpointer(os.path.join(run, "checkpoints"), async_save=False)
    assert ckpt.manager.all_steps() == [step]  # the last good step, saved on the way out
    ckpt.close()

    shutil.copy(os.path.join(smoke_curated, SHARD), os.path.join(dst, SHARD))  # repaired
    trainer.train_and_evaluate(_config(smoke, dst, num_workers=workers), run)
    straight = str(tmp_path / "straight")
    trainer.train_and_evaluate(_config(smoke, smoke_curated, num_workers=workers), straight)
    assert _losses(run) == _losses(straight)  # every step, the corrupt batch's included
    assert [s for s, _ in _losses(run)] == list(range(1, STEPS + 1))


def test_skipping_counts_and_logs_each_corrupt_batch(smoke, smoke_curated, tmp_path, caplog):
    dst = str(tmp_path / "curated")
    _corrupt_copy(smoke_curated, dst, seed=0)
    source = BatchSliceSource(dst, seed=0)
    read, skipped = 0, 0
    while read - skipped < STEPS:  # the elements the run reads to make STEPS steps
        skipped += "corrupt" in source[read]
        read += 1
    run = str(tmp_path / "run")
    config = _config(smoke, dst, skip_corrupt_batches=True, num_workers=1)
    trainer.train_and_evaluate(config, run)
    records = read_jsonl(os.path.join(run, "metrics.jsonl"))
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert sum(r.get("corrupt_batches_skipped", 0) for r in records) == skipped > 0
    assert np.all(np.isfinite([r["loss"] for r in records]))
    logged = [
        r.getMessage() for r in caplog.records if "skipping a corrupt batch" in r.getMessage()
    ]
    assert len(logged) == skipped and all(os.path.join(dst, SHARD) in m for m in logged)
