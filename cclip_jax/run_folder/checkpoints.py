"""Orbax checkpoints of a training run: model + optimizer state, the Grain iterator, the config.

    ckpt = Checkpointer(workdir + "/checkpoints", max_to_keep=3)
    step = ckpt.latest_step()                       # None if no complete checkpoint
    state = ckpt.restore(step, abstract_state, data_iterator)   # iterator restored in place
    ckpt.save(step, state, data_iterator, config)   # async; wait() before exiting

A checkpoint is written into a temporary folder and renamed when complete (orbax), so
`latest_step()` only ever sees complete ones: a run killed mid-save resumes from the previous
one. The data iterator's state is taken synchronously at `save`, so it matches `state` exactly.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp


def abstract_like(tree: Any) -> Any:
    """`ShapeDtypeStruct`s (with shardings) of a tree of arrays: a restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree)


class Checkpointer:
    """A `CheckpointManager` with three items: `state`, `data` (Grain iterator), `config`.

    Args:
      directory: where step folders go (created).
      max_to_keep: complete checkpoints kept (older ones deleted).
      async_save: write in a background thread (training continues during the write).
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
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

    def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None,
             config: ml_collections.ConfigDict | None = None, *, force: bool = True) -> bool:
        """Starts saving (async); returns whether a save was started."""
        items: dict[str, Any] = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items["config"] = ocp.args.JsonSave(json.loads(config.to_json_best_effort()))
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state: Any,
                data_iterator: grain.DatasetIterator | None = None) -> Any:
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
        restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding),
                                    abstract_params)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(  # only `params`: the optimizer state is not read
                item={"params": abstract_params}, restore_args={"params": restore_args},
                partial_restore=True)))
        return restored["state"]["params"]

    def wait(self) -> None:
        """Blocks until any async save has finished."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
