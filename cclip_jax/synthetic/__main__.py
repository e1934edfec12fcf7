"""CLI: `python -m cclip_jax.synthetic --out DIR --num_train N --preset natural --seed S`.

Writes a synthetic world (layout in `cclip_jax/synthetic/world.py` and docs/synthetic.md) with a
progress bar; `--preview` also writes `DIR/preview.png`, a contact sheet of training examples.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cclip_jax.synthetic.grammar import PRESETS
from cclip_jax.synthetic.preview import write_preview
from cclip_jax.synthetic.world import write_world


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cclip_jax.synthetic", description=__doc__)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num_train", type=int, required=True, help="training examples")
    p.add_argument("--preset", default="natural", help=f"caption preset: {', '.join(PRESETS)}")
    p.add_argument("--seed", type=int, default=0, help="world seed (>= 0)")
    p.add_argument("--image_size", type=int, default=64, help="image side in pixels")
    p.add_argument("--num_eval", type=int, default=100, help="items per kind and eval split")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.add_argument("--shard_size", type=int, default=1000, help="examples per tar shard")
    p.add_argument(
        "--no_csv", action="store_true", help="tar shards only: no train.csv / train_images"
    )
    p.add_argument("--preview", action="store_true", help="also write OUT/preview.png")
    p.add_argument("--preview_count", type=int, default=16, help="scenes on the preview")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.preset not in PRESETS:
        p.error(f"--preset: unknown value {args.preset!r}; known: {', '.join(PRESETS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    world = write_world(
        args.out,
        num_train=args.num_train,
        preset=args.preset,
        seed=args.seed,
        image_size=args.image_size,
        num_eval=args.num_eval,
        workers=args.workers,
        shard_size=args.shard_size,
        csv=not args.no_csv,
        progress=not args.no_progress,
    )
    elapsed = time.perf_counter() - start
    print(
        f"world in {args.out}: {world['train']['num_examples']} training examples in "
        f"{len(world['train']['shards'])} shards ({elapsed:.1f} s)"
    )
    if args.preview:
        path = Path(args.out) / "preview.png"
        # The world's own preset first, the other presets beside it for comparison.
        presets = [args.preset, *(p for p in PRESETS if p != args.preset)]
        write_preview(
            path,
            seed=args.seed,
            presets=presets,
            count=args.preview_count,
            image_size=args.image_size,
        )
        print(f"preview: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
