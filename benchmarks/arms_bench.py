"""Train-step time of every experiment arm relative to SigLIP, on the demo towers.

    python benchmarks/arms_bench.py [--arms a,b,c] [--rounds N] [--steps N] [--quick]

Each arm of `cclip_jax.experiment.runner.ARMS` is turned into a training config with
`runner.arm_config` from `configs/demo.py`'s config (batch 64, mu towers; not the v1
experiment's base), built with `cclip_jax.training.setup.build` and fed one fixed real batch of
its own data (arms with `data.mode="baseline"`, e.g. clip and siglip, get an i.i.d. batch; the
others a curated one; arms that change `data.curation.concept_kinds` curate their own data the
first time, cached under `data.cache_dir`). The timing is `benchmarks/train_bench.py`'s
`time_interleaved` with its `StepTimer`: compile + first step reported separately (compile s),
then blocks of `--steps` steps round-robin across the arms, `--rounds` times; each arm's ratio
is the median over rounds of its block time over SigLIP's block of the same round, with the IQR
of those per-round ratios. Prints a header line (date, machine, jax) and one markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import jax  # noqa: E402
from absl import flags  # noqa: E402
from train_bench import time_interleaved  # noqa: E402

from cclip_jax import config as config_lib  # noqa: E402
from cclip_jax.experiment import runner  # noqa: E402

BASE_ARM = "siglip"  # every ratio is to this arm's block of the same round
QUICK_ARMS = ("cclip", "clip")  # --quick: these + siglip
DEFAULTS = {"rounds": 30, "steps": 5}
QUICK = {"rounds": 3, "steps": 2}


def _cmd(args: list[str]) -> str:
    """stdout of a command, or "" when it is missing or fails."""
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def header(num_arms: int, rounds: int, steps: int) -> str:
    """UTC date, machine (lscpu model name and core count), jax version and backend, devices."""
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in _cmd(["lscpu"]).splitlines()
                if line.startswith("Model name")
            ),
            "",
        )
        or platform.processor()
        or "?"
    )
    date = _cmd(["date", "-u", "+%F"]).strip() or time.strftime("%Y-%m-%d", time.gmtime())
    return (
        f"# arms_bench — date: {date}; machine: {model}, {os.cpu_count()} cores; "
        f"jax {jax.__version__}; backend {jax.default_backend()}, "
        f"{jax.device_count()} device(s); {num_arms} arms x {rounds} rounds x "
        f"{steps} steps/block"
    )


def arm_configs(base, arms: list[str]) -> dict:
    """`{arm: training config}` with SigLIP first (the ratios' reference): demo base, batch 64,
    the demo's caption preset, seed 0, no Grain worker processes, the demo's mesh."""
    order = [BASE_ARM] + [a for a in arms if a != BASE_ARM]
    out = {}
    for arm in order:
        c = runner.arm_config(base, arm, preset=base.data.synthetic.preset, seed=0, batch_size=64)
        c.data.num_workers = 0
        out[arm] = c
    return out


def fmt_row(cells: list[str]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(cells) + " |"


def table(configs: dict, results: dict) -> list[str]:
    """The markdown table: per arm its data, median step ms, ratio to SigLIP (median and IQR
    of per-round ratios), compile s."""
    head = [
        "arm",
        "data",
        "step ms (median)",
        f"ratio to {BASE_ARM} (median)",
        "ratio IQR",
        "compile s",
    ]
    lines = [fmt_row(head), fmt_row(["---"] * len(head))]
    for arm, r in results.items():
        c = configs[arm]
        kinds = c.data.curation.get("concept_kinds", "all")  # curation's default: all
        data = "i.i.d." if c.data.mode == "baseline" else f"curated ({kinds})"
        if c.data.get("hard_negatives", False):
            data += " + hard negatives"
        lo, hi = r["paired_ratio_iqr"]
        lines.append(
            fmt_row(
                [
                    arm,
                    data,
                    f"{1e3 * r['step_s']:.1f}",
                    f"{r['paired_ratio']:.3f}",
                    f"{lo:.3f}–{hi:.3f}",
                    f"{r['compile_s']:.1f}",
                ]
            )
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """Parses the flags, times the arms, prints the header and the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=os.path.join(ROOT, "configs", "demo.py"),
        help="config file[:arg], as --config of cclip_jax.main",
    )
    parser.add_argument(
        "--arms",
        default=None,
        help=f"comma-separated arms of runner.ARMS (default: all; {BASE_ARM} "
        "is always timed, as the reference)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"blocks per arm (default {DEFAULTS['rounds']}, quick {QUICK['rounds']})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"steps per block (default {DEFAULTS['steps']}, quick {QUICK['steps']})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{', '.join(QUICK_ARMS)} + {BASE_ARM}, few rounds (the test)",
    )
    parser.add_argument("--cache_dir", default=None, help="data.cache_dir (the demo's default)")
    args = parser.parse_args(argv)
    flags.FLAGS.mark_as_parsed()  # Grain and absl-based code read flags

    defaults = QUICK if args.quick else DEFAULTS
    rounds = args.rounds or defaults["rounds"]
    steps = args.steps or defaults["steps"]
    if args.arms:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    else:
        arms = list(QUICK_ARMS) if args.quick else list(runner.ARMS)
    unknown = [a for a in arms if a not in runner.ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; known: {sorted(runner.ARMS)}")

    base = config_lib.load(args.config)
    if args.cache_dir:
        base.data.cache_dir = args.cache_dir
    configs = arm_configs(base, arms)
    start = time.perf_counter()
    results = time_interleaved(configs, steps, rounds)
    wall = time.perf_counter() - start
    print(header(len(configs), rounds, steps))
    print()
    print("\n".join(table(configs, results)))
    print()
    compile_total = sum(r["compile_s"] for r in results.values())
    iid = ", ".join(a for a, c in configs.items() if c.data.mode == "baseline")
    print(
        f"Wall {wall:.0f} s: compile + first step {compile_total:.0f} s of it, the rest each "
        f"arm's init compile, data building/loading and the timed blocks; load average "
        f"{os.getloadavg()[0]:.1f} at the end. Ratio: median over rounds of the arm's block / "
        f"{BASE_ARM}'s block of the same round. data.mode=baseline arms ({iid}) step on an "
        f"i.i.d. batch, the rest on a curated one."
    )


if __name__ == "__main__":
    main()
