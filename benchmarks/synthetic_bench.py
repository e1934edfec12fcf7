"""Generation rate of the synthetic world (issue target: >= 2,000 images/s on 2 cores at 64 px).

    python benchmarks/synthetic_bench.py [--num 20000] [--image_size 64] [--workers 2]

Prints, per stage, the single-process cost of one training example (scene sampling, caption,
rendering, PNG encoding, tar record), the in-memory rate that implies per core, and the
end-to-end rate of `write_world` (tar shards + CSV + loose PNGs on disk) with `--workers`
processes.

Wall-clock rates on a shared machine depend on what else runs, so the script prints the load
average and also CPU time (this process and its workers, from `os.times()`): CPU seconds per
image, and the rate that CPU cost would give on `--workers` otherwise idle cores. Stage costs are
CPU time too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable

from cclip_jax.synthetic.grammar import make_caption
from cclip_jax.synthetic.rendering import encode_png, render
from cclip_jax.synthetic.splits import STREAM_CAPTION, sample_scene, stream_rng
from cclip_jax.synthetic.world import write_world
from cclip_jax.synthetic.writers import ShardWriter, json_bytes


def _per_call_us(fn: Callable[[int], object], n: int) -> float:
    """CPU microseconds per call (CPU time: less sensitive than wall time to other load)."""
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1e6


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def stage_costs(n: int, image_size: int) -> dict[str, float]:
    """Microseconds per example for each stage, in one process."""
    scenes = [sample_scene(0, i) for i in range(n)]
    images = [render(s, image_size) for s in scenes]
    pngs = [encode_png(im) for im in images]
    costs = {
        "sample_scene": _per_call_us(lambda i: sample_scene(1, i), n),
        "make_caption": _per_call_us(
            lambda i: make_caption(scenes[i], "natural", stream_rng(0, STREAM_CAPTION, "train", i)),
            n,
        ),
        "render": _per_call_us(lambda i: render(scenes[i], image_size), n),
        "encode_png": _per_call_us(lambda i: encode_png(images[i]), n),
    }
    with tempfile.TemporaryDirectory() as d, ShardWriter(os.path.join(d, "x.tar")) as tar:
        costs["json+tar record"] = _per_call_us(
            lambda i: tar.add(
                f"{i:08d}",
                {"png": pngs[i], "txt": b"a caption", "json": json_bytes(scenes[i].to_json())},
            ),
            n,
        )
    return costs


def end_to_end(num: int, image_size: int, workers: int, csv: bool) -> tuple[float, float]:
    """`write_world` (training set only) with `workers` processes: (images/s, CPU s/image)."""
    out = tempfile.mkdtemp(prefix="synthetic_bench_")
    try:
        cpu, start = _cpu_seconds(), time.perf_counter()
        write_world(
            out, num_train=num, preset="natural", seed=0, image_size=image_size, num_eval=0,
            workers=workers, shard_size=max(1, num // (4 * workers)), csv=csv, progress=False,
        )  # fmt: skip
        wall = time.perf_counter() - start
        return num / wall, (_cpu_seconds() - cpu) / num
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--num", type=int, default=20000, help="examples for the end-to-end run")
    p.add_argument("--stage_num", type=int, default=2000, help="examples per stage timing")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()}")
    costs = stage_costs(args.stage_num, args.image_size)
    total = sum(costs.values())
    print(f"\nper-example cost, one process, {args.image_size} px:")
    for name, us in costs.items():
        print(f"  {name:<18} {us:8.1f} us  ({us / total:5.1%})")
    print(f"  {'total':<18} {total:8.1f} us  -> {1e6 / total:,.0f} images/s per core (in memory)")

    print(
        f"\nwrite_world end to end: {args.num} examples, {args.image_size} px, "
        f"{args.workers} workers"
    )
    for csv, what in (
        (False, "tar shards only (csv=False)"),
        (True, "tar shards + CSV + loose PNGs"),
    ):
        rate, cpu = end_to_end(args.num, args.image_size, args.workers, csv)
        print(
            f"  {what}:\n"
            f"    wall clock: {rate:,.0f} images/s\n"
            f"    CPU: {cpu * 1e6:,.0f} us/image (incl. worker start-up) -> "
            f"{args.workers / cpu:,.0f} images/s on {args.workers} idle cores"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
