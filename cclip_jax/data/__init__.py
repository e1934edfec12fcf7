"""The Grain input pipeline over curated shards (see docs/training.md).

Public API:
  DataSpec, build_dataset(spec, process_index=, process_count=) -> grain.IterDataset
  make_global_batch(local, rows) -> {images, text, concepts, labels} jax.Arrays
  BatchSliceSource (curated / baseline modes), ProcessSlice, Tokenizer
  ensure_demo_data(config) -> curated folder (synthetic world + curation, cached)
  swap_hard_negative(caption) -> str | None (NegCLIP hard negatives; DataSpec.hard_negatives)
"""

from cclip_jax.data.hard_negatives import swap_counts, swap_hard_negative
from cclip_jax.data.pipeline import (
    ARRAY_FIELDS,
    OPTIONAL_ARRAY_FIELDS,
    DataSpec,
    build_dataset,
    make_global_batch,
)
from cclip_jax.data.prepare import ensure_demo_data
from cclip_jax.data.source import MODES, BatchSliceSource
from cclip_jax.data.transforms import ProcessSlice, Tokenizer

__all__ = [
    "ARRAY_FIELDS",
    "MODES",
    "OPTIONAL_ARRAY_FIELDS",
    "BatchSliceSource",
    "DataSpec",
    "ProcessSlice",
    "Tokenizer",
    "build_dataset",
    "ensure_demo_data",
    "make_global_batch",
    "swap_counts",
    "swap_hard_negative",
]
