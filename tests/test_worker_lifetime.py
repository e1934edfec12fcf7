"""Grain workers die with their trainer, and no run leaves shared memory for the resource
tracker to clean up (cclip_jax/data/workers.py says why either could happen).

The slow tests start the real job (`python -m cclip_jax.main`, the smoke demo with two Grain
workers) as subprocesses; XLA's persistent cache is shared, so only the first one compiles.
Processes are read from /proc (Linux).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from grain.multiprocessing import SharedMemoryArray

from cclip_jax.data import workers
from cclip_jax.run_folder.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = 2
STEPS = 40  # the same in every run here: one step program, compiled once
LEAK = "leaked shared_memory"


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state letter, start time in clock ticks) of `pid`, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """{pid: start time} of every living descendant of `pid`."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None and st[1] != "Z":
            parents[int(name)] = st
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _, start) in parents.items():
            if ppid == parent and child not in found:
                found[child] = start
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _alive(procs: dict[int, int]) -> dict[int, str]:
    """{pid: command line} of `procs` still running (not zombies, not a reused pid)."""
    out = {}
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[1] != "Z" and st[2] == start:
            out[pid] = _cmdline(pid)
    return out


@pytest.fixture(scope="module")
def env(smoke_cache, tmp_path_factory):
    """The shared smoke data (built before the subprocesses, which find it cached) and an XLA
    cache for them."""
    return smoke_cache, str(tmp_path_factory.mktemp("xla"))


def _start(workdir, env, extra=(), stderr=None) -> subprocess.Popen:
    """The smoke demo with `WORKERS` Grain workers into `workdir`; its stderr to `stderr`
    (default: the file `workdir + ".stderr"`, since a pipe nobody reads would fill and stall
    the trainer)."""
    cache, xla = env
    cmd = [
        sys.executable,
        "-m",
        "cclip_jax.main",
        "--config=configs/demo.py:smoke",
        f"--workdir={workdir}",
        f"--config.data.cache_dir={cache}",
        f"--config.total_steps={STEPS}",
        f"--config.checkpoint_every_steps={STEPS}",
        "--config.log_every_steps=1",
        f"--config.data.num_workers={WORKERS}",
        "--config.eval.every_steps=-1",  # the run ends right after closing its iterator
        f"--config.compilation_cache_dir={xla}",
        *extra,
    ]
    with open(workdir + ".stderr", "w") as err:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
            stdout=subprocess.DEVNULL,
            stderr=err if stderr is None else stderr,
            text=True,
        )


def _stderr(workdir) -> str:
    with open(workdir + ".stderr") as f:
        return f.read()


def _wait_for_step(workdir, step, proc, timeout=600) -> None:
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and any(r["step"] >= step for r in read_jsonl(path)):
            return
        assert proc.poll() is None, _stderr(workdir)[-3000:]
        time.sleep(0.02)
    raise TimeoutError(f"step {step} never logged in {workdir}")


def _stop(procs: dict[int, int], timeout: float = 10.0) -> None:
    """SIGKILL to what is left of `procs` but the resource tracker, which then exits by itself
    once its last holder is gone, unlinking the shared memory they left (a SIGKILL would leave
    it in /dev/shm); the tracker too after `timeout`."""
    for pid, cmd in _alive(procs).items():
        if "resource_tracker" not in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _alive(procs):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # a training run (compiles)
def test_sigkilled_trainer_leaves_no_worker_or_tracker(env, tmp_path):
    workdir = str(tmp_path / "run")
    proc = _start(workdir, env)
    children: dict[int, int] = {}
    try:
        _wait_for_step(workdir, 2, proc)  # the workers are up and their queues full
        children = _descendants(proc.pid)
        names = list(_alive(children).values())
        assert sum("multiprocessing.spawn" in c for c in names) >= WORKERS, names
        assert any("resource_tracker" in c for c in names), names
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10 * workers.POLL_S
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(children), "alive after SIGKILL of the trainer"
    finally:
        proc.kill()
        proc.wait()
        _stop(children)


@pytest.mark.slow  # two training runs
@pytest.mark.parametrize(
    "extra, code",
    [((), 0), (("--config.max_present=1",), 2)],  # max_present=1: NaN loss at step 1
    ids=["finished", "nan_stop"],
)
def test_run_leaves_no_shared_memory_to_the_tracker(env, tmp_path, extra, code):
    # A pipe: its end comes once every holder is gone, the resource tracker (which warns after
    # the trainer has exited) included.
    proc = _start(str(tmp_path / "run"), env, extra, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == code, err[-3000:]
    assert LEAK not in err, err[-3000:]


def test_release_unlinks_the_name_and_keeps_the_values():
    """`release_shared_memory` on an element as the trainer receives it from a worker: the name
    is gone at once, the array still reads, and freeing it later unlinks nothing twice."""
    sent = SharedMemoryArray((4, 3), np.float32)  # the worker's block
    sent[:] = np.arange(12, dtype=np.float32).reshape(4, 3)
    received = SharedMemoryArray.from_metadata(sent.metadata)
    received.unlink_on_del()  # what Grain does with each array it receives
    name = sent.shm.name
    del sent
    element = {"images": received, "batch": np.int32(7), "corrupt": "a note"}
    assert workers.release_shared_memory(element) is element
    assert not os.path.exists(f"/dev/shm/{name}")
    np.testing.assert_array_equal(received, np.arange(12).reshape(4, 3))
    assert not received._unlink_on_del  # Grain's later free must not unlink it again
    unraisable = []
    old, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        del element, received  # Grain's free: close, and (no longer) unlink
        time.sleep(0.1)  # Grain may free in a background thread
    finally:
        sys.unraisablehook = old
    assert not unraisable, [u.exc_value for u in unraisable]
