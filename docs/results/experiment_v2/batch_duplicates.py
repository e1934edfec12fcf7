"""How many distinct captions a curated batch holds, against a random batch of the same data.

    python docs/results/experiment_v2/batch_duplicates.py CURATED_DIR [--random_batches=1000]

Prints, over every batch of the curated folder: the distinct captions per batch and the largest
number of copies of one caption (percentiles), the manifest's batch counts, the distinct captions
overall and the most frequent ones; then the distinct captions of random batches drawn from the
same captions.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import sys

import numpy as np

from cclip_jax.curation import shards


def main(curated_dir: str, random_batches: int = 1000) -> None:
    with open(os.path.join(curated_dir, shards.MANIFEST)) as f:
        manifest = json.load(f)
    b = int(manifest["batch_size"])
    paths = sorted(glob.glob(os.path.join(curated_dir, "batches-*.array_record")))
    captions = [c for p in paths for c in shards.iter_captions(p)]
    batches = [captions[i : i + b] for i in range(0, len(captions) - b + 1, b)]
    distinct = np.array([len(set(x)) for x in batches])
    top = np.array([collections.Counter(x).most_common(1)[0][1] for x in batches])
    q = [0, 10, 25, 50, 75, 90, 100]
    print(f"{curated_dir}: {len(batches)} batches of {b}")
    print("distinct captions per batch, percentiles", q, ":", np.percentile(distinct, q))
    print("largest copy count per batch, percentiles", q, ":", np.percentile(top, q))
    print(f"batches that are {b} copies of one caption: {(distinct == 1).sum()}")
    print(
        "manifest batches:",
        {k: v for k, v in manifest["batches"].items() if not isinstance(v, (dict, list))},
    )
    counts = collections.Counter(captions)
    print(
        f"distinct captions overall: {len(counts)} of {len(captions)}; most frequent:",
        counts.most_common(5),
    )
    rng = np.random.default_rng(0)
    rand = [
        len(set(captions[i] for i in rng.integers(0, len(captions), b)))
        for _ in range(random_batches)
    ]
    print(
        f"random batches of {b} from the same captions: distinct per batch mean "
        f"{np.mean(rand):.1f}, percentiles",
        q,
        ":",
        np.percentile(rand, q),
    )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = [int(a.split("=")[1]) for a in sys.argv[1:] if a.startswith("--random_batches=")]
    main(args[0], *(n[:1]))
