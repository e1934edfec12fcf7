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

from cclip_jax import data as data_lib
from cclip_jax.checkpointing import Checkpointer, abstract_like
from cclip_jax.metrics_writer import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import demo  # noqa: E402

_TIMING = ("steps_per_s", "examples_per_s")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    c = demo.get_config("smoke")
    c.data.cache_dir = cache
    data_lib.ensure_demo_data(c)  # once, before the subprocesses
    xla = str(tmp_path_factory.mktemp("xla"))
    return cache, xla


def command(workdir, env, steps, every=2):
    cache, xla = env
    return [sys.executable, "-m", "cclip_jax.main", "--config=configs/demo.py:smoke",
            f"--workdir={workdir}", f"--config.data.cache_dir={cache}",
            f"--config.total_steps={steps}", f"--config.checkpoint_every_steps={every}",
            "--config.log_every_steps=1", "--config.data.num_workers=1",
            f"--config.compilation_cache_dir={xla}"]


def start(workdir, env, steps, every=2):
    return subprocess.Popen(command(workdir, env, steps, every), cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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
    return [{k: v for k, v in r.items() if k not in _TIMING}
            for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


def params(workdir, step):
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                         "state"))
    return tree["params"]


@pytest.mark.slow
def test_sigkill_then_restart_is_exact(env, tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    finish(start(straight, env, 6))
    proc = start(killed, env, 6)
    wait_for_step(killed, 3, proc)  # after checkpoint 2 was started, before the end
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 6 not in [r["step"] for r in read_jsonl(os.path.join(killed, "metrics.jsonl"))]
    finish(start(killed, env, 6))
    assert losses(killed) == losses(straight)  # same batches -> same per-step losses, bitwise
    a, b = params(straight, 6), params(killed, 6)
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
    state = {"params": {"w": jax.device_put(jnp.arange(16.0), split), "b": jnp.ones(3)},
             "opt": {"mu": jnp.full((16,), 2.0)}}
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
