"""The Grain input pipeline over curated shards (see docs/training.md).

Public API:
  DataSpec.from_config(config), build_dataset(spec, process_index=, process_count=) -> Dataset
    (the opened source and tokenizer, and the Grain dataset: `iter(dataset)`)
  make_global_batch(local, rows) -> {images, text, concepts, labels} jax.Arrays
  BatchSliceSource (curated / baseline modes), ProcessSlice, Tokenizer
  tokenizer_path(config.data.tokenizer, curated_dir) -> the SentencePiece model a run uses
  swap_hard_negative(caption) -> str | None (NegCLIP hard negatives; DataSpec.hard_negatives)

The demo's data (synthetic world + curation) is built a layer below, by
`cclip_jax.curation.demo_data.ensure_demo_data`; this package only reads curated folders.
"""

from cclip_jax.data.hard_negatives import swap_counts, swap_hard_negative
from cclip_jax.data.pipeline import (
    ARRAY_FIELDS,
    OPTIONAL_ARRAY_FIELDS,
    Dataset,
    DataSpec,
    build_dataset,
    make_global_batch,
)
from cclip_jax.data.source import MODES, BatchSliceSource
from cclip_jax.data.transforms import ProcessSlice, Tokenizer, tokenizer_path

__all__ = [
    "ARRAY_FIELDS",
    "MODES",
    "OPTIONAL_ARRAY_FIELDS",
    "BatchSliceSource",
    "DataSpec",
    "Dataset",
    "ProcessSlice",
    "Tokenizer",
    "build_dataset",
    "make_global_batch",
    "swap_counts",
    "swap_hard_negative",
    "tokenizer_path",
]
