"""A full disk while a checkpoint is written: one `OSError(ENOSPC)` naming the step, the folder
and the last good checkpoint; no temporary folder left; the last good checkpoint restores exactly
and a later save works. `cli.run` turns it into one line and exit 2.

The failure is injected where the bytes are written, for step 2's temporary folder only, with
the real `CheckpointManager`:
  - tensorstore: the array write (`TensorStore.write`) fails with tensorstore's own error on a
    full disk, `ValueError("RESOURCE_EXHAUSTED: ... No space left on device")`;
  - python: a Python-level file (step metadata, Grain iterator state, config) is opened on
    `/dev/full`, so the kernel answers the write with ENOSPC.
Where orbax surfaces it: a synchronous save raises in `save`; an async save raises a failed
array write at `wait` (or at the next `save`, which waits for it first), and a failed
Python-level write in `save` itself (those files are written before `save` returns).
"""

from __future__ import annotations

import errno
import json
import os
import re

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from etils.epath import gpath

from cclip_jax import cli
from cclip_jax.run_folder.checkpoints import Checkpointer, abstract_like, is_full_disk

# A failed save leaves orbax's other writes to finish against a closed event loop; that noise is
# orbax's, not this test's.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]

STEP2 = f"{os.sep}2{ocp.utils.TMP_DIR_SUFFIX}"  # in every path written for step 2
CONFIG = ml_collections.ConfigDict({"lr": 0.1})


def full_disk_error(where: str) -> ValueError:
    """What tensorstore 0.1.86 raises when the disk is full (its text, from a real tmpfs)."""
    return ValueError(
        f'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "{where}": '
        f'Failed writing: "{where}d/e4198a927ab58ca9ebd91d17a433062e": Failed to write 610439 '
        "bytes to file 4: No space left on device [os_error_code='28']"
    )


def fail_tensorstore_writes(monkeypatch, make_error=full_disk_error) -> None:
    """Step 2's array writes fail: `ts.open` (as orbax calls it to write) returns a store whose
    `write` raises `make_error(path)`; every other open is the real one."""
    real_open = ts.open

    class Failing:
        def __init__(self, where):
            self.where = where

        def __getitem__(self, index):
            return self

        async def write(self, *args, **kwargs):
            raise make_error(self.where)

    def open_(spec, *args, **kwargs):
        text = json.dumps(spec.to_json() if isinstance(spec, ts.Spec) else spec, default=str)
        paths = re.findall(r'"path": "([^"]*)"', text)
        where = next((p for p in paths if STEP2 in p), None)
        if kwargs.get("assume_metadata") and where is not None:

            async def failing():
                return Failing(where)

            return failing()
        return real_open(spec, *args, **kwargs)

    monkeypatch.setattr(ts, "open", open_)


def fail_python_writes(monkeypatch) -> None:
    """Step 2's Python-level files are written to `/dev/full`: the kernel's ENOSPC."""
    real_open = gpath.PosixGPath.open

    def open_(self, mode="r", **kwargs):
        if "w" in mode and STEP2 in os.fspath(self):
            return open("/dev/full", mode)
        return real_open(self, mode, **kwargs)

    monkeypatch.setattr(gpath.PosixGPath, "open", open_)


INJECT = {"tensorstore": fail_tensorstore_writes, "python": fail_python_writes}
# Which call raises, by (async_save, injection): see the module docstring.
SURFACES = {
    (False, "tensorstore"): "save",
    (False, "python"): "save",
    (True, "tensorstore"): "wait",
    (True, "python"): "save",
}


def state(value: float) -> dict:
    return {
        "params": {"w": jnp.arange(16.0) * value, "b": jnp.full((3,), value)},
        "opt": {"mu": jnp.full((16,), -value), "count": jnp.int32(value)},
    }


def data(skip: int = 0) -> grain.DatasetIterator:
    it = iter(grain.MapDataset.range(100).to_iter_dataset())
    for _ in range(skip):
        next(it)
    return it


def assert_restores(directory: str, step: int, value: float, position: int) -> None:
    """A fresh `Checkpointer` restores checkpoint `step` exactly, iterator included."""
    fresh = Checkpointer(directory, async_save=False)
    it = data()
    back = fresh.restore(step, abstract_like(state(value)), it)
    for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(state(value)), strict=True):
        np.testing.assert_array_equal(got, want)
    assert next(it) == position
    fresh.close()


def assert_names_step_2(error: OSError, directory: str, last: str = "1") -> None:
    assert type(error) is OSError and error.errno == errno.ENOSPC
    assert error.filename == os.path.join(directory, "2")
    assert error.strerror == (
        f"no space left on device while saving checkpoint 2 in {directory}; its temporary "
        f"folder was removed and the last good checkpoint is {last}"
    )
    assert error.__cause__ is not None and is_full_disk(error.__cause__)


def save_2(ckpt: Checkpointer, it) -> tuple[str, OSError]:
    """Saves step 2 and waits; which of the two raised, and the error."""
    try:
        ckpt.save(2, state(2.0), it, CONFIG)
    except OSError as e:
        return "save", e
    try:
        ckpt.wait()
    except OSError as e:
        return "wait", e
    pytest.fail("the full disk was not reported")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("injection", sorted(INJECT))
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_full_disk_names_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, async_save, injection
):
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, async_save=async_save)
    it = data(skip=3)
    ckpt.save(1, state(1.0), it, CONFIG)
    ckpt.wait()
    INJECT[injection](monkeypatch)  # from here on, only step 2's writes fail
    next(it)
    where, error = save_2(ckpt, it)
    assert where == SURFACES[async_save, injection]
    assert_names_step_2(error, directory)
    assert os.listdir(directory) == ["1"]  # the failed step's temporary folder is gone
    assert ckpt.latest_step() == 1
    assert_restores(directory, 1, 1.0, position=3)
    ckpt.save(3, state(3.0), it, CONFIG)  # space again (no injection for step 3)
    ckpt.wait()
    assert ckpt.latest_step() == 3
    ckpt.close()
    assert sorted(os.listdir(directory)) == ["1", "3"]
    assert_restores(directory, 3, 3.0, position=4)


def test_an_async_failure_found_by_the_next_save_is_named_after_its_own_step(tmp_path, monkeypatch):
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, async_save=True)
    it = data()
    ckpt.save(1, state(1.0), it, CONFIG)
    fail_tensorstore_writes(monkeypatch)
    assert ckpt.save(2, state(2.0), it, CONFIG)  # returns while step 2 is written
    with pytest.raises(OSError) as raised:
        ckpt.save(3, state(3.0), it, CONFIG)  # waits for step 2 first
    assert_names_step_2(raised.value, directory)
    assert os.listdir(directory) == ["1"]
    ckpt.save(3, state(3.0), it, CONFIG)
    ckpt.close()
    assert sorted(os.listdir(directory)) == ["1", "3"]


def test_other_write_errors_pass_unchanged(tmp_path, monkeypatch):
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
    other = ValueError("INVALID_ARGUMENT: not a full disk")
    fail_tensorstore_writes(monkeypatch, make_error=lambda where: other)
    with pytest.raises(ValueError) as raised:
        ckpt.save(2, state(2.0), None, CONFIG)
    assert raised.value is other
    ckpt.close()


def test_a_full_disk_before_any_checkpoint_says_none(tmp_path, monkeypatch):
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, async_save=False)
    fail_tensorstore_writes(monkeypatch)
    with pytest.raises(OSError) as raised:
        ckpt.save(2, state(2.0), None, CONFIG)
    assert_names_step_2(raised.value, directory, last="none")
    assert os.listdir(directory) == []
    ckpt.close()


def test_cli_run_prints_the_full_disk_as_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)
    directory = str(tmp_path / "checkpoints")

    def train():  # what the trainer does: save, save, close at the end (an async failure)
        ckpt = Checkpointer(directory, async_save=True)
        it = data()
        ckpt.save(1, state(1.0), it, CONFIG)
        ckpt.wait()
        fail_tensorstore_writes(monkeypatch)
        ckpt.save(2, state(2.0), it, CONFIG)
        ckpt.close()

    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        cli.run(train)
    assert stop.value.code == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert ours == [
        f"error: disk full writing {directory}/2: no space left on device while saving "
        f"checkpoint 2 in {directory}; its temporary folder was removed and the last good "
        "checkpoint is 1. Free space and rerun the same command: the run resumes from its last "
        "complete checkpoint"
    ]


def test_is_full_disk_reads_the_whole_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("wrapped") from None  # only in __context__
    except RuntimeError as e:
        assert is_full_disk(e)
    assert is_full_disk(full_disk_error("/x/"))
    assert is_full_disk(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_full_disk(ExceptionGroup("g", [ValueError(), OSError(errno.ENOSPC, "x")]))
    assert not is_full_disk(ValueError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB"))
    assert not is_full_disk(OSError(errno.EACCES, "Permission denied"))
