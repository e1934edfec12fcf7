"""Exact resume after SIGKILL, checkpoint on SIGTERM, partial checkpoints never loaded.

These start the real job (`python -m cclip_jax.main`) as subprocesses on one CPU device; XLA's
persistent compilation cache is shared, so only the first one compiles.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cclip_jax.run_folder.checkpoints import Checkpointer, abstract_like
from cclip_jax.run_folder.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TIMING = ("steps_per_s", "examples_per_s")


@pytest.fixture(scope="module")
def env(smoke_cache, tmp_path_factory):
    """The shared data cache, its smoke data built before the subprocesses (which find it
    cached), and an XLA cache for them."""
    return smoke_cache, str(tmp_path_factory.mktemp("xla"))


def command(workdir, env, steps, every=2, extra=()):
    cache, xla = env
    return [
        sys.executable,
        "-m",
        "cclip_jax.main",
        "--config=configs/demo.py:smoke",
        f"--workdir={workdir}",
        f"--config.data.cache_dir={cache}",
        f"--config.total_steps={steps}",
        f"--config.checkpoint_every_steps={every}",
        "--config.log_every_steps=1",
        "--config.data.num_workers=1",
        f"--config.compilation_cache_dir={xla}",
        *extra,
    ]


def start(workdir, env, steps, every=2, extra=()):
    # Its own process group: `sigkill` also stops the Grain worker a killed job leaves behind.
    return subprocess.Popen(
        command(workdir, env, steps, every, extra),
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def sigkill(proc, timeout=30):
    """SIGKILL to the trainer (a preemption). Its Grain workers and multiprocessing's resource
    tracker then exit by themselves (`cclip_jax.data.workers`): wait for its process group to
    empty, and after `timeout` SIGKILL what is left, so that a regression fails the test that
    checks it (tests/test_worker_lifetime.py) rather than hanging this one."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)  # raises once the group is empty
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finish(proc, timeout=600):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def wait_for_step(workdir, step, proc, timeout=600):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and any(r["step"] >= step for r in read_jsonl(path)):
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    raise TimeoutError(f"step {step} never logged in {workdir}")


def losses(workdir):
    return [
        {k: v for k, v in r.items() if k not in _TIMING}
        for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    ]


def params(workdir, step):
    tree = ocp.PyTreeCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(step), "state")
    )
    return tree["params"]


def complete_steps(workdir):
    """Steps of the complete checkpoints in `workdir` (orbax writes a step into
    `<step>.orbax-checkpoint-tmp-*` and renames it to `<step>` once every item is written).
    Read from the listing: a `CheckpointManager` here would clean up the running job's tmp
    folders."""
    ckpts = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) if os.path.isdir(ckpts) else []


def wait_for_checkpoint(workdir, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if complete_steps(workdir):
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.005)
    raise TimeoutError(f"no checkpoint completed in {workdir}")


@pytest.mark.slow
def test_sigkill_then_restart_is_exact(env, tmp_path):
    """Killed right after its first complete checkpoint, a restarted run resumes from it (model,
    optimizer AND data iterator) and logs exactly the per-step metrics of an uninterrupted run.

    Every step checkpoints (asynchronously): a save waits for the previous one, so the run is
    still far from the end when the first checkpoint lands, and the kill comes then.
    """
    total, every, extra = 16, 1, ["--config.eval.every_steps=-1"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    finish(start(straight, env, total, every, extra))
    proc = start(killed, env, total, every, extra)
    wait_for_checkpoint(killed, proc)
    sigkill(proc)
    resume = complete_steps(killed)[-1]
    before = [r["step"] for r in read_jsonl(os.path.join(killed, "metrics.jsonl"))]
    assert resume < total and total not in before  # killed mid-run, after a complete checkpoint
    restart = start(killed, env, total, every, extra)
    _, err = restart.communicate(timeout=600)
    assert restart.returncode == 0, err[-3000:]
    assert f"Resuming from checkpoint {resume} in" in err  # not a run from scratch
    records = losses(killed)
    assert [r["step"] for r in records] == list(range(1, total + 1))
    want = losses(straight)
    assert records[:resume] == want[:resume]
    # The steps after the checkpoint ran in the restarted process: on the same batches as the
    # uninterrupted run (the restored iterator), from the same state -> the same metrics, bitwise.
    for got, ref in zip(records[resume:], want[resume:], strict=True):
        assert got == ref, (got["step"], {k: (got[k], ref[k]) for k in got if got[k] != ref[k]})
    a, b = params(straight, total), params(killed, total)
    flat_a, flat_b = ocp.tree.to_flat_dict(a), ocp.tree.to_flat_dict(b)
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=str(key))


@pytest.mark.slow
def test_sigterm_saves_and_partial_checkpoints_are_ignored(env, tmp_path):
    workdir = str(tmp_path / "run")
    proc = start(workdir, env, 1000, every=1000)
    wait_for_step(workdir, 2, proc)
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    logged = read_jsonl(os.path.join(workdir, "metrics.jsonl"))[-1]["step"]
    ckpts = os.path.join(workdir, "checkpoints")
    assert os.listdir(ckpts) == [str(logged)]  # saved at the step it stopped, not at 1000
    # A half-written later checkpoint (what a kill mid-save leaves) must not be loaded.
    partial = os.path.join(ckpts, f"{logged + 5}.orbax-checkpoint-tmp-1234")
    os.makedirs(os.path.join(partial, "state"))
    finish(start(workdir, env, logged + 1, every=1))
    steps = [r["step"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]
    assert steps == list(range(1, logged + 2))
    assert str(logged + 1) in os.listdir(ckpts)


def test_checkpointer_round_trip_with_data_iterator_and_params_only(tmp_path):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = {
        "params": {"w": jax.device_put(jnp.arange(16.0), split), "b": jnp.ones(3)},
        "opt": {"mu": jnp.full((16,), 2.0)},
    }
    it = iter(grain.MapDataset.range(100).to_iter_dataset())
    for _ in range(7):
        next(it)
    ckpt = Checkpointer(str(tmp_path / "c"), async_save=True)
    ckpt.save(5, state, it, None)
    ckpt.wait()
    assert ckpt.latest_step() == 5
    fresh = iter(grain.MapDataset.range(100).to_iter_dataset())
    back = ckpt.restore(5, abstract_like(state), fresh)
    assert next(fresh) == 7  # the iterator continues where it was saved
    np.testing.assert_array_equal(back["params"]["w"], np.arange(16.0))
    assert back["params"]["w"].sharding == split
    ckpt.close()
    # `init_from` another run: a fresh reader, parameters only.
    only = Checkpointer(str(tmp_path / "c")).restore_params(5, abstract_like(state["params"]))
    assert set(only) == {"w", "b"}
    np.testing.assert_array_equal(only["b"], np.ones(3))
