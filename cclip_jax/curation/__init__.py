"""Offline curation: raw image-caption pairs -> curated CCLIP batches (see docs/curation.md).

Public API:
  read_batches(out_dir)      iterate the curated batches in order
  CuratedShards(out_dir)     random access: `read_rows(batch, row_start, row_stop)`
  local_runner.run / beam_runner.run   curate (what `python -m cclip_jax.curate` calls)
  demo_data.ensure_demo_data(config)   the demo's synthetic world, curated and cached

This file imports the shard reader only (numpy and ArrayRecord): the training pipeline reads
curated folders through it without loading the curator (numba, the runners), which is imported
from its own modules where it runs.
"""

from cclip_jax.curation.shards import CuratedShards, read_batches

__all__ = ["CuratedShards", "read_batches"]
