"""Generation rate of the synthetic world (issue target: >= 2,000 images/s on 2 cores at 64 px).

    python benchmarks/synthetic_bench.py [--num 20000] [--image_size 64] [--workers 2]

Prints, per stage, the single-process cost of one training example (scene sampling, caption,
rendering, PNG encoding, tar record), the in-memory rate that implies per core, and the
end-to-end rate of `write_world` (tar shards + CSV + loose PNGs on disk) with `--workers`
processes. Timings on a shared machine are noisy: the script prints the load average with them.
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
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n * 1e6


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


def end_to_end(num: int, image_size: int, workers: int) -> float:
    """Images per second of `write_world` (training set only) with `workers` processes."""
    out = tempfile.mkdtemp(prefix="synthetic_bench_")
    try:
        start = time.perf_counter()
        write_world(
            out, num_train=num, preset="natural", seed=0, image_size=image_size, num_eval=0,
            workers=workers, shard_size=max(1, num // (4 * workers)), progress=False,
        )  # fmt: skip
        return num / (time.perf_counter() - start)
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

    rate = end_to_end(args.num, args.image_size, args.workers)
    print(
        f"\nwrite_world end to end: {args.num} examples, {args.image_size} px, "
        f"{args.workers} workers: {rate:,.0f} images/s (tar shards + CSV + loose PNGs)"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
