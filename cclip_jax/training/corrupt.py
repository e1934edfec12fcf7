"""Corrupt curated batches in the training loop: stop naming them, or skip them.

The data source turns a batch whose shard fails its checksum into a marker
(`{"batch", "element", "corrupt": "FILE: batch I is corrupt (...)"}`, see
`cclip_jax.data.source.BatchSliceSource`). `next_batch` takes the next element of the Grain
iterator and either returns it (a good batch), raises `CorruptBatchError` with the iterator put
back before the bad element (so a checkpoint saved now resumes on that very batch once the file
is repaired), or, with `config.data.skip_corrupt_batches`, logs it, counts it and reads on.

In a multi-process run the processes read different rows of the same global batch, so one may
find corruption where another does not. Skipping must then be agreed (every process skips the
step if any saw it corrupt) with a gather across processes before every step, which makes the
host wait for the previous step and so costs the overlap of input and compute: it is done only
with skipping on. Without it, the process that found the corruption raises on its own, cannot
join a collective save, and the others stop when the distributed runtime notices it gone (its
heartbeat timeout), at their last periodic checkpoint.
"""

from __future__ import annotations

from typing import Any

import grain
import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class CorruptBatchError(ValueError):
    """A curated batch the run reached is corrupt; the message names the file and the batch."""


def _agreed(reason: str | None) -> str | None:
    """`reason`, or a stand-in when another process found this step's batch corrupt."""
    flags = multihost_utils.process_allgather(np.int32(reason is not None))
    if reason is None and int(np.max(flags)):
        return "another process read a corrupt slice of this batch"
    return reason


def next_batch(
    data_iter: grain.DatasetIterator, step: int, skip: bool, limit: int, counts: dict[str, int]
) -> Any:
    """The next good element of `data_iter` (this process's slice of a global batch).

    Args:
      data_iter: the training iterator (`cclip_jax.data.Dataset`).
      step: the training steps done so far (the batch is for step `step + 1`).
      skip: `config.data.skip_corrupt_batches`.
      limit: the most batches skipped in a row before giving up (the number of curated
        batches: a whole epoch of corrupt batches would otherwise be skipped forever).
      counts: `counts["corrupt_batches_skipped"]` is incremented per skipped batch (the
        trainer logs it with the next metrics line).

    Raises:
      CorruptBatchError: when the next batch is corrupt and `skip` is off (`data_iter` is
        then back where it was before that batch), or after `limit` corrupt batches in a row.
    """
    for _ in range(limit + 1):
        before = data_iter.get_state()
        local = next(data_iter)
        reason = local.get("corrupt")
        if reason is not None:
            reason = f"step {step + 1} (data element {local['element']}): {reason}"
        if skip and jax.process_count() > 1:
            reason = _agreed(reason)
        if reason is None:
            return local
        if not skip:
            data_iter.set_state(before)
            raise CorruptBatchError(
                f"{reason}; repair or re-curate the file, or set "
                "--config.data.skip_corrupt_batches=True to skip such batches"
            )
        counts["corrupt_batches_skipped"] = counts.get("corrupt_batches_skipped", 0) + 1
        logging.warning(
            "skipping a corrupt batch (%d so far): %s", counts["corrupt_batches_skipped"], reason
        )
    raise CorruptBatchError(
        f"{limit + 1} corrupt batches in a row, more than the curated folder holds, before "
        f"step {step + 1}: the whole folder is unreadable; re-curate it"
    )
