"""Curation benchmark: stage times and peak memory on generated captions, and real COCO captions.

  python benchmarks/curation_bench.py                 # 1,000,000 generated captions
  python benchmarks/curation_bench.py --num=100000    # a smaller run
  python benchmarks/curation_bench.py --skip_generated  # only the SugarCrepe (COCO) report

Part 1 curates N caption-only examples end to end with the local runner (read CSV -> shards +
tokenizer + manifest) and prints stage times (wall), total CPU time (independent of other load
on the machine) and peak RSS (this process and its workers).
Part 2 curates the real COCO captions of SugarCrepe (true captions and hard negatives) and prints
concept counts, sharing in curated versus random batches, and example masked captions.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cclip_jax.curation import local_runner, read_batches, settings  # noqa: E402

COLOURS = "red blue green yellow purple orange black white grey brown pink cyan".split()
SIZES = ["", "small ", "large ", "tiny ", "big "]
SHAPES = "square circle triangle star hexagon cross heart diamond ring arrow".split()
RELATIONS = ["left of", "right of", "above", "below", "next to", "in front of", "behind"]
PLACES = [
    "",
    " on a white background",
    " on a dark background",
    " in the corner",
    " near the edge",
    " in the middle",
]


def generate(n: int, seed: int = 0) -> list[str]:
    """n captions in the synthetic world's grammar (1-3 objects, attributes, relations)."""
    rng = np.random.default_rng(seed)

    def obj(k):
        return np.char.add(
            np.char.add(rng.choice(SIZES, k), rng.choice(COLOURS, k)),
            np.char.add(" ", rng.choice(SHAPES, k)),
        )

    a, b, c = obj(n), obj(n), obj(n)
    r1, r2 = rng.choice(RELATIONS, n), rng.choice(RELATIONS, n)
    place = rng.choice(PLACES, n)
    kind = rng.integers(0, 3, n)
    out = []
    for i in range(n):
        if kind[i] == 0:
            s = f"a {a[i]}{place[i]}"
        elif kind[i] == 1:
            s = f"a {a[i]} {r1[i]} a {b[i]}{place[i]}"
        else:
            s = f"a {a[i]} {r1[i]} a {b[i]} and a {c[i]} {r2[i]} it"
        out.append(s)
    return out


def write_csv(path: str, captions: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(([f"{i}.png", c] for i, c in enumerate(captions)))


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (load-independent)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_gib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return own, kids


def bench_generated(num: int, workers: int, tmp: str) -> None:
    t = time.perf_counter()
    caps = generate(num)
    path = os.path.join(tmp, "generated.csv")
    write_csv(path, caps)
    del caps
    print(f"generated {num:,} captions in {time.perf_counter() - t:.1f} s (not timed below)")
    c = settings.default_config()
    c.caption_only = True
    c.num_workers = workers
    c.progress = False
    c.hash_inputs = True
    t, cpu = time.perf_counter(), cpu_seconds()
    m = local_runner.run(c, path, "csv", os.path.join(tmp, "out_generated"))
    total, cpu = time.perf_counter() - t, cpu_seconds() - cpu
    own, kids = peak_rss_gib()
    print(f"\n== {num:,} generated captions, local runner, {workers} workers ==")
    for k, v in m["_timings"].items():
        print(f"  {k:22s} {v:7.1f} s")
    print(f"  {'total':22s} {total:7.1f} s   ({num / total:,.0f} captions/s)")
    print(
        f"  CPU time, all processes: {cpu:.1f} s (wall is higher when other jobs share the "
        f"cores; see `uptime`: load {os.getloadavg()[0]:.1f} now)"
    )
    print(f"  peak RSS: main {own:.2f} GiB, largest worker {kids:.2f} GiB")
    print(
        f"  batches {m['num_batches']:,} of {m['batch_size']}, dropped leftovers "
        f"{m['counts']['leftover_dropped']}, concepts {m['concepts']['num_concepts']:,}"
    )
    print(
        f"  sharing: curated {m['sharing']['curated']:.1f} vs random "
        f"{m['sharing']['random']:.1f} batch-mates sharing >= 1 concept (of "
        f"{m['batch_size'] - 1})"
    )
    print(f"  labels: {m['batches']['labels']}")


def bench_sugarcrepe(tmp: str, data: str) -> None:
    caps = []
    for f in sorted(glob.glob(os.path.join(data, "*.json"))):
        for v in json.load(open(f)).values():
            caps += [v["caption"], v["negative_caption"]]
    caps = list(dict.fromkeys(caps))  # true captions repeat across the item files
    path = os.path.join(tmp, "sugarcrepe.csv")
    write_csv(path, caps)
    c = settings.default_config()
    c.caption_only = True
    c.progress = False
    c.batch_size = 128
    c.tokenizer_vocab_size = 2000
    out = os.path.join(tmp, "out_sugarcrepe")
    t = time.perf_counter()
    m = local_runner.run(c, path, "csv", out)
    print(
        f"\n== SugarCrepe COCO captions ({len(caps):,} unique), B={c.batch_size}, "
        f"{time.perf_counter() - t:.1f} s =="
    )
    k = m["concepts"]
    print(
        f"  concepts: {k['num_concepts']:,} (by n-gram order {k['by_order']}), "
        f"{k['mean_per_caption']:.1f} per caption"
    )
    print(
        f"  sharing: curated {m['sharing']['curated']:.1f} vs random "
        f"{m['sharing']['random']:.1f} batch-mates sharing >= 1 concept (of "
        f"{c.batch_size - 1})"
    )
    print(f"  labels: {m['batches']['labels']}; +1 capped by R: {m['batches']['present_capped']}")
    shown = 0
    for b in read_batches(out):
        for concept in b["concepts"]:
            if "<M>" in concept and shown < 8:
                print(f"  masked: {concept}")
                shown += 1
        if shown >= 8:
            break
    b = next(iter(read_batches(out)))
    print(f"  first batch concepts: {[x for x in b['concepts'] if x and '<M>' not in x][:12]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip_generated", action="store_true")
    ap.add_argument(
        "--sugarcrepe",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/sugarcrepe"),
        help="folder of SugarCrepe JSON files (default: ../shared beside the checkout)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_generated:
            bench_generated(args.num, args.workers, tmp)
        if os.path.isdir(args.sugarcrepe):
            bench_sugarcrepe(tmp, args.sugarcrepe)


if __name__ == "__main__":
    main()
