"""Training throughput: SigLIP vs CCLIP step time at the demo batch, and the input pipeline.

    python benchmarks/train_bench.py [--steps 30] [--batches 40] [--config configs/demo.py]

Prints one JSON object: steps/s and examples/s of the jitted train step for λ = 0 (SigLIP) and
λ = config.cond_weight (CCLIP) on the same towers, batch and data; the CCLIP/SigLIP step-time
ratio (goal <= 1.15); the Grain pipeline's examples/s on one core (no worker processes) and
its ratio to what the CCLIP step consumes (goal >= 2). Steps run on one fixed batch so the
figures are the step alone; compile time is excluded (reported separately).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
from absl import flags  # noqa: E402

from cclip_jax import data as data_lib  # noqa: E402
from cclip_jax import train  # noqa: E402


def load_config(path: str, arg: str | None):
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def time_steps(config, steps: int) -> dict[str, float]:
    setup = train.build(config)
    state = setup.init_state(jax.random.key(0))
    local = next(iter(data_lib.build_dataset(setup.spec)))
    batch = data_lib.make_global_batch(local, setup.mesh, setup.axes)
    t0 = time.perf_counter()
    state, metrics = setup.step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = setup.step(state, batch)
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - t0) / steps
    return {"compile_s": compile_s, "step_s": per_step, "steps_per_s": 1 / per_step,
            "examples_per_s": config.batch_size / per_step}


def time_pipeline(config, batches: int) -> float:
    setup_spec = train.build(config).spec  # the same spec the trainer uses
    spec = data_lib.DataSpec(**{**setup_spec.__dict__, "num_workers": 0})
    it = iter(data_lib.build_dataset(spec))
    next(it)  # open shards, load the tokenizer
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * config.batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.py"))
    parser.add_argument("--config_arg", default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--cache_dir", default=None)
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()

    config = load_config(args.config, args.config_arg)
    if args.cache_dir:
        config.data.cache_dir = args.cache_dir
    siglip = config.copy_and_resolve_references()
    siglip.cond_weight = 0.0
    out = {"devices": [str(d) for d in jax.devices()], "batch_size": config.batch_size,
           "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    out["siglip"] = time_steps(siglip, args.steps)
    out["cclip"] = time_steps(config, args.steps)
    out["cclip_over_siglip_step_time"] = out["cclip"]["step_s"] / out["siglip"]["step_s"]
    out["pipeline_examples_per_s_per_core"] = time_pipeline(config, args.batches)
    out["pipeline_over_cclip_consumption"] = (out["pipeline_examples_per_s_per_core"]
                                              / out["cclip"]["examples_per_s"])
    out["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
