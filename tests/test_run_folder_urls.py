"""A run folder at a URL: every file lands in the object store, none in a local `gs:/` folder.

The store is fsspec's in-memory filesystem registered as `gs://`, in gcsfs's place, so the
run folder goes through the very calls a real bucket gets (etils.epath -> fsspec -> the
filesystem of `gs`), offline. Like an object store, and unlike a disk, it refuses to append.
What it cannot stand in for: TensorStore's own GCS driver, which writes orbax's arrays (it
would try to reach the bucket), so checkpoints are only opened, listed and cleaned up here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from typing import ClassVar

import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem
from tensorboardX.proto import event_pb2

from cclip_jax import run_folder
from cclip_jax.run_folder import paths
from cclip_jax.run_folder.metrics import MetricsWriter, read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "gs://bucket/runs/r1"
CONFIG = {"seed": 0, "total_steps": 30, "cond_weight": 1.0, "model": {"embed_dim": 8}}


class FakeGCS(MemoryFileSystem):
    """gcsfs's stand-in: paths as gcsfs has them (`bucket/key`), objects written whole."""

    protocol = ("gs", "gcs")
    root_marker = ""
    store: ClassVar[dict] = {}  # its own, not MemoryFileSystem's (set afresh per test)
    pseudo_dirs: ClassVar[list] = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        for prefix in ("gs://", "gcs://"):
            path = path.removeprefix(prefix)
        return path.strip("/")

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError("an object store has no append")
        return super()._open(path, mode, **kwargs)


def _clear_epath_filesystems():
    type(epath_backend.fsspec_backend)._get_filesystem.cache_clear()


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """The in-memory `gs://` store, empty, for one test run from an empty local folder."""
    registry = importlib.import_module("fsspec.registry")._registry
    for name in FakeGCS.protocol:
        monkeypatch.setitem(registry, name, FakeGCS)
    monkeypatch.setattr(FakeGCS, "store", {})
    monkeypatch.setattr(FakeGCS, "pseudo_dirs", [""])
    FakeGCS.clear_instance_cache()
    _clear_epath_filesystems()
    monkeypatch.chdir(tmp_path)
    yield FakeGCS.store
    _clear_epath_filesystems()
    assert os.listdir(tmp_path) == []  # no `gs:/bucket/...` folder made locally


def _objects(store, folder: str) -> dict[str, bytes]:
    """The objects under `bucket/...` folder, by path relative to it."""
    prefix = folder.removeprefix("gs://") + "/"
    return {k[len(prefix) :]: v.getvalue() for k, v in store.items() if k.startswith(prefix)}


def _scalars(events: bytes) -> list[tuple[str, int, float]]:
    """`(tag, step, value)` of every scalar in a TensorBoard event file (TFRecord framing:
    length u64, its crc u32, the Event proto, its crc u32)."""
    out, at = [], 0
    while at < len(events):
        (length,) = struct.unpack("Q", events[at : at + 8])
        event = event_pb2.Event.FromString(events[at + 12 : at + 12 + length])
        at += 12 + length + 4
        out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return out


def _staging_folders() -> set[str]:
    names = os.listdir(tempfile.gettempdir())
    return {n for n in names if n.startswith(("cclip-tensorboard-", "cclip-report-"))}


def test_a_whole_run_folder_is_written_and_read_at_the_url(bucket):
    staged_before = _staging_folders()
    run_folder.check_workdir(RUN)
    assert run_folder.check_resume(RUN, CONFIG) == []
    run_folder.write_config(RUN, CONFIG)
    run_folder.append_history(RUN, "start", step=0)
    writer = MetricsWriter(RUN, total_steps=30, console=False)
    metrics = run_folder.path(RUN, run_folder.METRICS)
    writer.write(10, {"loss": 0.1, "lr": 0.1})
    # Lines go up together (an object store rewrites the whole object on each write).
    assert not paths.exists(metrics) or read_jsonl(metrics) == []
    writer.flush()  # what the trainer does before each checkpoint
    assert [r["step"] for r in read_jsonl(metrics)] == [10]
    for step in (20, 30):
        writer.write(step, {"loss": 1.0 / step, "lr": 0.1})
    writer.close()

    # A resume from step 20: the record of step 30 goes, the new one is appended. Its event
    # file is a new one, named after the second it starts in (tensorboardX).
    time.sleep(1.05 - time.time() % 1)
    assert run_folder.check_resume(RUN, {**CONFIG, "total_steps": 60}) == []
    run_folder.append_history(RUN, "resume", step=20)
    writer = MetricsWriter(RUN, total_steps=30, start_step=20, console=False)
    assert [r["step"] for r in read_jsonl(metrics)] == [10, 20]
    writer.write(30, {"loss": 0.5, "lr": 0.05})
    writer.flush()
    writer.close()
    assert [(r["step"], r["loss"]) for r in read_jsonl(metrics)] == [
        (10, 0.1),
        (20, 0.05),
        (30, 0.5),
    ]
    with pytest.raises(run_folder.ConfigChangedError, match=r"cond_weight: 1\.0 -> 0\.5"):
        run_folder.check_resume(RUN, {**CONFIG, "cond_weight": 0.5})
    changes = run_folder.check_resume(RUN, {**CONFIG, "cond_weight": 0.5}, force=True)
    run_folder.record_forced_change(RUN, changes)

    from cclip_jax.evaluation import scorer, suite
    from cclip_jax.report import evaluation, write_report
    from cclip_jax.report.kind import report_kind

    result = {"binding/iid/attribute_swap": {"metrics": {"accuracy": 0.75}, "n": 4}}
    eval_path = suite.write_results(RUN, 30, result, "")
    assert eval_path == f"{RUN}/eval/step_00000030.json"
    (loaded,), problems = evaluation.load_evals(RUN)
    assert problems == [] and loaded["step"] == 30 and loaded["results"] == result
    assert scorer.load_run_config(RUN).to_dict() == CONFIG
    assert write_report(RUN) == f"{RUN}/report.html"
    assert report_kind(RUN) == "run"  # metrics.jsonl found in the bucket
    paths.write_atomic("gs://bucket/experiment/results.json", "{}")
    assert report_kind("gs://bucket/experiment") == "experiment"

    files = _objects(bucket, RUN)
    assert json.loads(files["config.json"]) == CONFIG
    history = [json.loads(line)["event"] for line in files["history.jsonl"].splitlines()]
    assert history == ["start", "resume", "forced_config_change"]
    assert json.loads(files["eval/step_00000030.json"])["results"] == result
    page = files["report.html"].decode()
    assert RUN in page and "0.75" in page
    pngs = [n for n in files if n.startswith("report_files/")]
    assert pngs and all(f"{n}" in page for n in pngs)
    events = sorted(n for n in files if n.startswith("tensorboard/events.out.tfevents."))
    assert len(events) == 2  # one file per start, as in a local folder
    losses = sorted(
        ([(s, v) for t, s, v in _scalars(files[n]) if t == "loss"] for n in events), key=len
    )
    assert [[s for s, _ in run] for run in losses] == [[30], [10, 20, 30]]
    assert [[v for _, v in run] for run in losses] == [
        pytest.approx([0.5]),
        pytest.approx([0.1, 0.05, 1.0 / 30]),  # TensorBoard keeps float32
    ]
    assert not any(n.endswith(".tmp") for n in files)
    assert _staging_folders() <= staged_before  # the local staging folders are gone


def test_the_checkpointer_opens_lists_and_cleans_a_url_folder(bucket, monkeypatch):
    """Orbax asks google-cloud-storage whether the bucket has a hierarchical namespace (the
    fake has none); its array writes (TensorStore's GCS driver) are not exercised here."""
    from orbax.checkpoint._src.path import gcs_utils

    from cclip_jax.run_folder.checkpoints import Checkpointer

    monkeypatch.setattr(gcs_utils, "get_bucket", lambda name: object())
    directory = run_folder.path(RUN, run_folder.CHECKPOINTS)
    ckpt = Checkpointer(directory, async_save=False)
    try:
        assert ckpt.directory == directory  # not made absolute into ./gs:/bucket/...
        assert ckpt.latest_step() is None
        partial = paths.join(directory, "7.orbax-checkpoint-tmp-123", "state")
        paths.makedirs(partial)
        paths.write_atomic(paths.join(partial, "x"), b"half a checkpoint")
        ckpt._remove_temporary_folders(7)
        assert paths.listdir(directory) == []
    finally:
        ckpt.close()


def test_an_unsupported_scheme_or_a_missing_package_is_one_line(monkeypatch):
    with pytest.raises(paths.PathBackendError, match=r"memory:// is not a supported"):
        run_folder.check_workdir("memory://run")
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    _clear_epath_filesystems()
    from cclip_jax.run_folder.checkpoints import Checkpointer

    # Also where a library caller's first write would be (the trainer opens the checkpoints).
    with pytest.raises(paths.PathBackendError, match=r"needs the gcsfs package.*pip install"):
        Checkpointer(run_folder.path(RUN, run_folder.CHECKPOINTS))


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_training_at_gs_without_gcsfs_stops_at_once_with_one_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cclip_jax.main",
            f"--config={os.path.join(ROOT, 'configs', 'demo.py')}:smoke",
            "--workdir=gs://bucket/run",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=120,
    )
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: gs://bucket/run: a gs:// run folder needs the gcsfs package")
    assert "pip install gcsfs==" in line
    assert os.listdir(tmp_path) == []
