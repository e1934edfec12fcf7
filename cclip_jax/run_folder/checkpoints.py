"""Orbax checkpoints of a training run: model + optimizer state, the Grain iterator, the config.

    ckpt = Checkpointer(workdir + "/checkpoints", max_to_keep=3)
    step = ckpt.latest_step()                       # None if no complete checkpoint
    state = ckpt.restore(step, abstract_state, data_iterator)   # iterator restored in place
    ckpt.save(step, state, data_iterator, config)   # async; wait() before exiting

A checkpoint is written into a temporary folder and renamed when complete (orbax), so
`latest_step()` only ever sees complete ones: a run killed mid-save resumes from the previous
one. The data iterator's state is taken synchronously at `save`, so it matches `state` exactly.

A full disk (or quota) while writing is raised as one `OSError(errno.ENOSPC)` naming the step,
the directory and the last good checkpoint, after the failed step's temporary folder is removed;
`cli.run` prints it as one line. An async save's failure surfaces at `wait` or at the next
`save` (orbax waits for the previous write first), so it is named after its own step.

The directory may be a URL (`gs://bucket/run/checkpoints`): orbax then writes its metadata
through `etils.epath` (gcsfs), probes the bucket with google-cloud-storage, and writes the
arrays with TensorStore's own GCS driver (Google application-default credentials).
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from cclip_jax.run_folder import paths

_FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# TensorStore reports a full disk as `ValueError("RESOURCE_EXHAUSTED: ... No space left on device
# [os_error_code='28']")`; RESOURCE_EXHAUSTED alone is not enough (it also means out of memory).
_FULL_DISK_WORDS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
_SETTLE_S = 5.0  # at most this long removing a failed save's temporary folder


def is_full_disk(error: BaseException) -> bool:
    """Whether `error`, its `__cause__`/`__context__` chain or its group holds a full disk: an
    `OSError` with errno ENOSPC/EDQUOT, or an error whose text has the OS's words for them."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_DISK_ERRNOS:
            return True
        if any(word in str(e) for word in _FULL_DISK_WORDS):
            return True
        todo += [e.__cause__, e.__context__]
        if isinstance(e, BaseExceptionGroup):
            todo += e.exceptions
    return False


def abstract_like(tree: Any) -> Any:
    """`ShapeDtypeStruct`s (with shardings) of a tree of arrays: a restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


class Checkpointer:
    """A `CheckpointManager` with three items: `state`, `data` (Grain iterator), `config`.

    Args:
      directory: where step folders go (created).
      max_to_keep: complete checkpoints kept (older ones deleted).
      async_save: write in a background thread (training continues during the write).
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = paths.absolute(directory)  # a URL stays one
        self._writing: int | None = None  # the step an async save is still writing
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,  # leftovers of a killed save
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        self.manager.reload()
        return self.manager.latest_step()

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: grain.DatasetIterator | None,
        config: ml_collections.ConfigDict | None = None,
        *,
        force: bool = True,
    ) -> bool:
        """Starts saving (async); returns whether a save was started.

        Raises `OSError(errno.ENOSPC)` when the disk is full, for this step or for the previous
        async save (see `wait`).
        """
        self.wait()  # the previous async save's failure is its own, not this step's
        items: dict[str, Any] = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items["config"] = ocp.args.JsonSave(json.loads(config.to_json_best_effort()))
        with self._full_disk_named(step):
            started = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        self._writing = step if started else None
        return started

    def restore(
        self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator | None = None
    ) -> Any:
        """The `state` of checkpoint `step` with the shardings of `abstract_state`; restores
        `data_iterator` in place when given."""
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the parameters of checkpoint `step` (for `init_from` a cclip checkpoint).

        Call it on a fresh `Checkpointer` (one that has not saved `state` with another handler).
        """
        restore_args = jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_params
        )
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(  # only `params`: the optimizer state is not read
                    item={"params": abstract_params},
                    restore_args={"params": restore_args},
                    partial_restore=True,
                )
            ),
        )
        return restored["state"]["params"]

    def wait(self) -> None:
        """Blocks until any async save has finished; raises `OSError(errno.ENOSPC)` naming its
        step when the disk filled up during it."""
        step, self._writing = self._writing, None
        if step is None:
            self.manager.wait_until_finished()
            return
        with self._full_disk_named(step):
            self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for an async save (see `wait`), then releases orbax's threads."""
        try:
            self.wait()
        finally:
            self.manager.close()

    @contextmanager
    def _full_disk_named(self, step: int) -> Iterator[None]:
        """Turns a full disk while writing `step` into one `OSError(errno.ENOSPC)` that names
        the step, the directory and the last good checkpoint, after removing the step's
        temporary folder; any other error passes unchanged."""
        try:
            yield
        except Exception as e:
            if not is_full_disk(e):
                raise
            self._drain_failed_save()
            self._remove_temporary_folders(step)
            last = self.latest_step()
            raise OSError(
                errno.ENOSPC,
                f"no space left on device while saving checkpoint {step} in {self.directory}; "
                f"its temporary folder was removed and the last good checkpoint is "
                f"{'none' if last is None else last}",
                paths.join(self.directory, str(step)),
            ) from e

    def _remove_temporary_folders(self, step: int) -> None:
        """Removes `<step>.orbax-checkpoint-tmp*` until it stays gone: once one item of a save
        has failed, orbax stops waiting for the others, and their writes still in flight
        (Python threads, TensorStore) may recreate the folder just after it is removed. Every
        process removes what it sees (the folder may be per host or shared); a leftover that
        appears even later is removed when the next run opens the folder."""
        pattern = f"{step}{ocp.utils.TMP_DIR_SUFFIX}*"
        deadline, quiet = time.monotonic() + _SETTLE_S, 0
        while quiet < 3 and time.monotonic() < deadline:
            found = paths.glob(self.directory, pattern)
            for tmp in found:
                try:
                    paths.rmtree(tmp)
                except OSError:  # being rewritten by a write still in flight: next round
                    pass
            quiet = 0 if found else quiet + 1
            time.sleep(0.05)

    def _drain_failed_save(self) -> None:
        """Collects the other errors the failed save left in orbax's background work (e.g. its
        step metadata write), so that they neither surface at the next save nor write on."""
        for _ in range(8):  # each call raises at most one of them
            try:
                self.manager.wait_until_finished()
                self.manager.check_for_errors()
                return
            except Exception as e:  # the same failed save, reported by the caller
                logging.info("Another error of the failed checkpoint save: %s", e)
