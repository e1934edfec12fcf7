"""Training throughput: SigLIP vs CCLIP step time at the demo batch, and the input pipeline.

    python benchmarks/train_bench.py [--steps 4] [--rounds 50] [--batches 40] [--config ...]

Prints one JSON object: steps/s and examples/s of the jitted train step for λ = 0 (SigLIP) and
λ = config.cond_weight (CCLIP) on the same towers, batch and data; the CCLIP/SigLIP step-time
ratio (goal <= 1.15; the median of ratios of adjacent timed blocks); the Grain pipeline's
examples/s on one core (no worker processes) and its ratio to what the CCLIP step consumes
(goal >= 2). Steps run on one fixed batch so the
figures are the step alone; compile time is excluded (reported separately).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from cclip_jax import config as config_lib  # noqa: E402
from cclip_jax import data as data_lib  # noqa: E402
from cclip_jax.curation import demo_data  # noqa: E402
from cclip_jax.training.setup import build  # noqa: E402


class StepTimer:
    """One config's jitted step on one fixed batch; `run(n)` times n steps. The config's demo
    data is built first when `config.data.curated_dir` is empty (and the field set to it)."""

    def __init__(self, config):
        config.data.curated_dir = demo_data.ensure_demo_data(config)
        self.setup = build(config)
        self.state = self.setup.init_state(jax.random.key(0))
        local = next(iter(self.setup.data))
        self.batch = data_lib.make_global_batch(local, self.setup.batch.rows)
        self.compile_s = self.run(1)
        self.samples: list[float] = []

    def run(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.state, metrics = self.setup.step(self.state, self.batch)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - t0) / steps


def time_interleaved(configs: dict, steps: int, rounds: int) -> dict[str, dict[str, float]]:
    """Alternates blocks of steps between the configs and reports each one's median and
    fastest block, and for each config the median over rounds of its block time divided by the
    first config's block of the same round (paired: on a shared machine the load changes by
    ±20% within a minute, and adjacent blocks see about the same load)."""
    timers = {name: StepTimer(c) for name, c in configs.items()}
    for _ in range(rounds):
        for timer in timers.values():
            timer.samples.append(timer.run(steps))
    base = np.asarray(next(iter(timers.values())).samples)
    out = {}
    for name, timer in timers.items():
        samples = np.asarray(timer.samples)
        per_step = float(np.median(samples))
        out[name] = {
            "compile_s": timer.compile_s,
            "step_s": per_step,
            "step_s_min": float(samples.min()),
            "steps_per_s": 1 / per_step,
            "examples_per_s": configs[name].batch_size / per_step,
            "paired_ratio": float(np.median(samples / base)),
            "paired_ratio_iqr": [float(q) for q in np.percentile(samples / base, [25, 75])],
        }
    return out


def time_pipeline(config, batches: int) -> float:
    # The trainer's spec, on one core.
    spec = dataclasses.replace(data_lib.DataSpec.from_config(config), num_workers=0)
    it = iter(data_lib.build_dataset(spec))
    next(it)  # open shards, load the tokenizer
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * config.batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=os.path.join(ROOT, "configs", "demo.py"),
        help="config file[:arg], as --config of cclip_jax.main",
    )
    parser.add_argument("--steps", type=int, default=4, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=50, help="blocks per config")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--cache_dir", default=None)
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()

    config = config_lib.load(args.config)
    if args.cache_dir:
        config.data.cache_dir = args.cache_dir
    siglip = config.copy_and_resolve_references()
    siglip.cond_weight = 0.0
    out = {
        "devices": [str(d) for d in jax.devices()],
        "batch_size": config.batch_size,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    out.update(time_interleaved({"siglip": siglip, "cclip": config}, args.steps, args.rounds))
    out["cclip_over_siglip_step_time"] = out["cclip"]["paired_ratio"]
    out["pipeline_examples_per_s_per_core"] = time_pipeline(config, args.batches)
    out["pipeline_over_cclip_consumption"] = (
        out["pipeline_examples_per_s_per_core"] / out["cclip"]["examples_per_s"]
    )
    out["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
