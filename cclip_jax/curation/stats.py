"""Run statistics for the manifest, as a mergeable accumulator (local and Beam use the same)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from cclip_jax.curation.batches import Batch
from cclip_jax.losses import init as loss_init


@dataclasses.dataclass
class BatchStats:
    """Sums over written batches; `merge` combines partial sums from parallel writers."""

    batches: int = 0
    examples: int = 0
    sharing_sum: float = 0.0
    sharing_batches: int = 0  # batches whose sharing was measured (a spaced sample)
    filler: int = 0
    capped: int = 0
    masked: int = 0
    duplicates_skipped: int = 0  # mate/filler candidates passed over for the duplicate cap
    duplicates_over_cap: int = 0  # members beyond max_duplicates copies of their caption
    label_counts: Counter = dataclasses.field(default_factory=Counter)  # "+1" / "-1" / "0"
    present_per_row: Counter = dataclasses.field(default_factory=Counter)
    concepts_per_batch: Counter = dataclasses.field(default_factory=Counter)
    # Σ over batches of per-column label products (`losses.init.triple_sums`): what the
    # trainer needs to start the conditional bias at the data's positive-triple rate.
    triple_sums: Counter = dataclasses.field(default_factory=Counter)

    def add(self, batch: Batch) -> None:
        """Accounts one batch (only its K real concept columns count, not the padding)."""
        k = len(batch.concepts)
        lab = batch.labels[:, :k]
        self.batches += 1
        self.examples += len(batch.members)
        if "sharing" in batch.stats:
            self.sharing_sum += batch.stats["sharing"]
            self.sharing_batches += 1
        self.filler += int(batch.stats.get("filler", 0))
        self.capped += int(batch.stats["capped"])
        self.masked += int(batch.stats["num_masked"])
        self.duplicates_skipped += int(batch.stats.get("duplicates_skipped", 0))
        self.duplicates_over_cap += int(batch.stats.get("duplicates_over_cap", 0))
        for name, value in (("+1", 1), ("-1", -1), ("0", 0)):
            self.label_counts[name] += int((lab == value).sum())
        self.present_per_row.update((lab == 1).sum(axis=1).tolist())
        self.concepts_per_batch[k] += 1
        self.triple_sums.update(loss_init.triple_sums(lab))

    def merge(self, other: BatchStats) -> BatchStats:
        out = BatchStats()
        for f in dataclasses.fields(self):
            setattr(out, f.name, getattr(self, f.name) + getattr(other, f.name))
        return out

    def raw(self) -> dict[str, Any]:
        """Exact, JSON-able state (for passing partial sums between processes)."""
        return {
            f.name: (dict(v) if isinstance(v, Counter) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }

    @classmethod
    def from_raw(cls, d: dict[str, Any]) -> BatchStats:
        counters = {"label_counts", "present_per_row", "concepts_per_batch", "triple_sums"}
        keep_str = {"label_counts", "triple_sums"}
        return cls(
            **{
                k: Counter({(int(a) if k not in keep_str else a): b for a, b in v.items()})
                if k in counters
                else v
                for k, v in d.items()
            }
        )

    def to_dict(self) -> dict[str, Any]:
        n = max(self.batches, 1)
        return {
            "batches": self.batches,
            "examples": self.examples,
            "filler": self.filler,
            "present_capped": self.capped,
            "masked_per_batch": round(self.masked / n, 4),
            "duplicates_skipped": self.duplicates_skipped,
            "duplicates_over_cap": self.duplicates_over_cap,
            "labels": dict(sorted(self.label_counts.items())),
            "present_per_row": {str(k): v for k, v in sorted(self.present_per_row.items())},
            "concepts_per_batch": {str(k): v for k, v in sorted(self.concepts_per_batch.items())},
            "triple_sums": {k: self.triple_sums.get(k, 0) for k in loss_init.TRIPLE_SUMS},
            "curated_sharing": round(self.sharing_sum / max(self.sharing_batches, 1), 4),
            "sharing_sampled_batches": self.sharing_batches,
        }


def concept_summary(
    strings: list[str], df: np.ndarray, num_captions: int, num_pairs: int
) -> dict[str, Any]:
    """Concept counts by n-gram order, a log2 document-frequency histogram, per-caption mean.

    Args:
      strings: C concept strings; df: int [C]; num_pairs: sum over captions of their concepts.
    """
    orders = Counter(s.count(" ") + 1 for s in strings)
    bins = Counter(int(np.log2(d)) for d in df.tolist())
    return {
        "num_concepts": len(strings),
        "by_order": {str(k): v for k, v in sorted(orders.items())},
        "df_log2_histogram": {f"[{2**b},{2 ** (b + 1)})": v for b, v in sorted(bins.items())},
        "mean_per_caption": round(num_pairs / max(num_captions, 1), 4),
    }
