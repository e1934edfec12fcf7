"""Validation of the curation config (`configs/curate.py`), run at start by both runners."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from cclip_jax.curation import kinds, labels


def validate(c: ml_collections.ConfigDict) -> None:
    """Fails with a message naming the field when a value is unusable."""
    def need(ok: bool, field: str, why: str) -> None:
        if not ok:
            raise ValueError(f"config.{field}={c[field]!r}: {why}")

    for f in ("batch_size", "max_concepts", "max_present", "pool_size", "batches_per_shard",
              "max_ngram", "min_df", "max_caption_chars", "tokenizer_vocab_size",
              "tokenizer_sample", "num_workers", "tfds_unit_size"):
        need(isinstance(c[f], int) and c[f] >= 1, f, "must be an int >= 1")
    need(c.batch_size >= 2, "batch_size", "a batch needs at least 2 captions")
    need(0 <= c.max_masked <= c.max_concepts, "max_masked", "must be in [0, max_concepts]")
    need(c.max_present <= c.max_concepts, "max_present", "must be <= max_concepts")
    need(c.pool_size >= c.batch_size, "pool_size", "must be >= batch_size")
    need(0.0 < c.max_df_frac <= 1.0, "max_df_frac", "must be in (0, 1]")
    need(c.min_batch_count >= 1, "min_batch_count", "must be >= 1")
    need(isinstance(c.max_duplicates, int) and not isinstance(c.max_duplicates, bool)
         and c.max_duplicates >= 0, "max_duplicates", "must be an int >= 0 (0 = no cap)")
    need(c.label_rule in labels.RULES, "label_rule", f"must be one of {sorted(labels.RULES)}")
    need(c.max_ngram <= 8, "max_ngram", "n-grams longer than 8 words are never shared")
    need(isinstance(c.concept_kinds, str) and c.concept_kinds in kinds.KINDS, "concept_kinds",
         f"must be one of {', '.join(kinds.KINDS)}")
    need(c.concept_kinds != "masked" or c.max_masked >= 1, "concept_kinds",
         "'masked' keeps only masked captions, so it needs max_masked >= 1")


DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "configs", "curate.py")


def load_config(path: str = DEFAULT_CONFIG, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file, for callers without absl flags (tests, benchmarks)."""
    spec = importlib.util.spec_from_file_location("curate_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
