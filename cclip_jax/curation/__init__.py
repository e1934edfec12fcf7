"""Offline curation: raw image-caption pairs -> curated CCLIP batches (see docs/curation.md).

Public API:
  read_batches(out_dir)      iterate the curated batches in order
  CuratedShards(out_dir)     random access: `read_rows(batch, row_start, row_stop)`
  local_runner.run / beam_runner.run   curate (what `python -m cclip_jax.curate` calls)
"""

from cclip_jax.curation.shards import CuratedShards, read_batches

__all__ = ["CuratedShards", "read_batches"]
