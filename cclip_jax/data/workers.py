"""Grain worker processes that end with the trainer, and shared memory that does not outlive it.

    it_ds = it_ds.mp_prefetch(options, worker_init_fn=workers.exit_with_parent)
    it_ds = it_ds.map(workers.release_shared_memory)    # in this process, on each element

Grain (0.2.18) starts each `mp_prefetch` worker with multiprocessing's `spawn` context as a
daemon process. "Daemon" only means multiprocessing terminates it when the trainer exits
normally; nothing in the worker notices a trainer killed by SIGKILL, so the worker fills its
output queue and then retries the put forever. It also holds the write end of multiprocessing's
resource tracker (one tracker process per trainer, shared with its spawned children), so the
tracker, which exits and unlinks leftover shared memory only once every holder is gone, stays
too. `exit_with_parent` ends the worker within `POLL_S` of the trainer's death; the tracker
then sees its last holder go, unlinks the shared memory the dead trainer never released (its
"leaked shared_memory objects" warning is right in that case) and exits.

`prctl(PR_SET_PDEATHSIG)` is not used: Linux sends that signal when the *thread* that forked
the child ends, and Grain starts workers from a prefetch thread that it stops and restarts, e.g.
on `set_state` when a checkpoint is restored, which would kill live workers of a live trainer.

Each worker copies the arrays of an element into new shared memory blocks and sends their
names; this process maps them (`SharedMemoryArray`, marked to unlink the name when freed).
Grain queues that unlink to a background thread pool. The last batch a run consumed is freed
only at interpreter exit (on CPU, JAX reads host arrays in place and its caches keep the last
step's inputs until then; `jax.clear_caches()` frees them), when that pool is already stopped:
the names stay, and the resource tracker unlinks them with a "leaked shared_memory objects"
warning, after every run, a NaN stop included. `release_shared_memory` unlinks each name as soon
as the element reaches this process: the mapping stays valid until the array is freed (POSIX),
nobody opens the name again, and the memory goes with the last reference, or with the process,
however it ends.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import TypeVar

import jax
from grain.multiprocessing import SharedMemoryArray

T = TypeVar("T")

POLL_S = 0.5  # how often a worker checks that its trainer is alive
# A worker's exit status when its trainer died (nobody reads it: init reaps the orphan).
ORPHANED_EXIT = 3


def exit_with_parent(worker_index: int, worker_count: int) -> None:
    """Grain's `worker_init_fn(worker_index, worker_count)`: ends this worker process as soon
    as the process that started it is gone (a daemon thread polls `os.getppid()`, which changes
    to the reaper's pid when the parent dies). No-op outside a multiprocessing child.
    """
    del worker_index, worker_count  # every worker watches the same parent
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    threading.Thread(
        target=_exit_when_orphaned, args=(parent.pid,), name="exit-with-parent", daemon=True
    ).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    # `os._exit`, not `sys.exit`: the worker's own exit handlers would wait on queues that only
    # the dead parent could drain. Its blocks that never reached the parent are unlinked by the
    # resource tracker once this process is gone.
    os._exit(ORPHANED_EXIT)


def release_shared_memory(element: T) -> T:
    """Unlinks the names of `element`'s shared-memory arrays (those this process must unlink,
    i.e. received from a Grain worker) and returns `element` unchanged: the arrays stay
    readable and their memory is freed with them. Shapes and values of every leaf unchanged.
    """
    for leaf in jax.tree.leaves(element):
        # `_unlink_on_del` is Grain's own flag for "this holder unlinks the name when freed";
        # clearing it keeps the later free from unlinking a name that is already gone.
        if isinstance(leaf, SharedMemoryArray) and leaf._unlink_on_del:
            leaf._unlink_on_del = False
            leaf.shm.unlink()
    return element
