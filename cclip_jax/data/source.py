"""Random access to one JAX process's slice of every global batch of a curated folder.

Two modes read the same curated pairs:

- `curated`: step `s` reads one curated batch, whole (this is what curation paid for): epoch
  `e = s // num_batches` visits every batch once in a seeded permutation of batch indices (so
  batches are shuffled between each other, never rows within or across them).
- `baseline`: global batch `i` is `B` pairs drawn i.i.d. (a seeded permutation of all pairs per
  epoch): the SigLIP/CLIP comparison arm. Concept labels refer to the curated batch a pair came
  from, so they are meaningless here and come back as zeros (train with `cond_weight = 0`).

Either way a process reads only rows `[p*b, (p+1)*b)` of a global batch (`b = B / P`), through
ArrayRecord random access (`CuratedShards.read_rows`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cclip_jax.curation.shards import CorruptShardError, CuratedShards

MODES = ("curated", "baseline")


class BatchSliceSource:
    """`source[i]` -> this process's rows of global batch `i` (raw bytes and strings).

    Args:
      curated_dir: a complete curation output (manifest.json present).
      mode: `curated` or `baseline`.
      process_index, process_count: which slice of each batch to read.
      seed: permutation seed of the `baseline` mode.

    `source[s]` (`s` = the step, any int >= 0; epoch `s // len(source)` has its own seeded
    permutation) returns `{"batch": int, "key": [b] str, "image": [b] bytes, "caption": [b] str,
    "labels": int8 [b, K], "concepts": [K] str (padded with "")}`. `batch` is the curated batch
    index (curated mode) or `s` (baseline mode).

    A batch whose shard bytes are corrupt (`CorruptShardError`) comes back as the marker
    `{"batch": int, "element": s, "corrupt": str}` (the error's message: file and batch)
    instead of raising:
    an error raised inside a Grain worker reaches the trainer as a traceback from another
    process, while a marker lets the trainer name it in one line, save the last good step, or
    skip the batch (`config.data.skip_corrupt_batches`).
    """

    def __init__(
        self,
        curated_dir: str,
        mode: str = "curated",
        process_index: int = 0,
        process_count: int = 1,
        seed: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"config.data.mode={mode!r} is not one of {MODES}")
        self.curated_dir, self.mode, self.seed = curated_dir, mode, seed
        self._shards: CuratedShards | None = CuratedShards(curated_dir)
        self.batch_size = self._shards.batch_size
        self.max_concepts = self._shards.max_concepts
        self.max_present = self._shards.max_present
        self.num_batches = self._shards.num_batches
        self.manifest = self._shards.manifest
        if self.batch_size % process_count:
            raise ValueError(
                f"curated batch size {self.batch_size} does not split over "
                f"{process_count} processes"
            )
        self.rows = self.batch_size // process_count
        self.row_start = process_index * self.rows
        self._perm_epoch, self._perm = -1, np.zeros(0, np.int64)

    # ArrayRecord readers do not pickle; Grain workers reopen the shards lazily.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_shards"] = None
        state["_perm_epoch"], state["_perm"] = -1, np.zeros(0, np.int64)
        return state

    @property
    def shards(self) -> CuratedShards:
        if self._shards is None:
            self._shards = CuratedShards(self.curated_dir)
        return self._shards

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            raise IndexError(f"step {index} < 0")
        epoch, i = divmod(index, self.num_batches)
        batch = (
            int(self._permutation(epoch, self.num_batches)[i]) if self.mode == "curated" else index
        )
        try:
            if self.mode == "baseline":
                return self._baseline(index)
            out = self.shards.read_rows(batch, self.row_start, self.row_start + self.rows)
        except CorruptShardError as e:
            return {"batch": batch, "element": index, "corrupt": str(e)}
        out["batch"] = batch
        return out

    def _permutation(self, epoch: int, n: int) -> np.ndarray:
        # One permutation per epoch, cached: consecutive steps share it.
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return self._perm

    def _baseline(self, index: int) -> dict[str, Any]:
        epoch, i = divmod(index, self.num_batches)
        start = i * self.batch_size + self.row_start
        perm = self._permutation(epoch, self.num_batches * self.batch_size)
        ids = perm[start : start + self.rows]
        out: dict[str, Any] = {"batch": index, "key": [], "image": [], "caption": []}
        for e in ids:
            batch, row = divmod(int(e), self.batch_size)
            one = self.shards.read_rows(batch, row, row + 1)
            for field in ("key", "image", "caption"):
                out[field].append(one[field][0])
        out["labels"] = np.zeros((self.rows, self.max_concepts), np.int8)
        out["concepts"] = [""] * self.max_concepts
        return out
