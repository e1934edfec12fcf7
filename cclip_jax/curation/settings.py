"""The curation config: its fields and defaults (what `configs/curate.py` gives), and the check
both runners run at start (`validate`)."""

from __future__ import annotations

import ml_collections

from cclip_jax.config import variant
from cclip_jax.curation import kinds, labels

# `configs/curate.py:small`: test-sized batches, pools and tokenizer.
VARIANTS = {
    "small": {
        "batch_size": 8,
        "pool_size": 64,
        "max_concepts": 16,
        "max_masked": 4,
        "max_present": 6,
        "batches_per_shard": 4,
        "tokenizer_vocab_size": 64,
        "num_workers": 1,
    }
}


def default_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The default curation config; `arg`: one of `VARIANTS` (`small`), or None."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Reading and bad-input rules.
    c.caption_only = False  # no images: for analysis runs (image bytes stored as b"")
    c.check_images = True  # PIL verify() each image; corrupt ones are skipped and counted
    c.max_caption_chars = 1000  # longer captions are skipped as `caption_too_long`
    c.csv_image_column = "image"
    c.csv_caption_column = "caption"
    c.tfds_split = "train"
    c.tfds_image_key = "image"
    c.tfds_caption_key = "caption"
    c.tfds_unit_size = 10_000

    # Concepts.
    c.max_ngram = 4
    c.min_df = 2
    c.max_df_frac = 0.2

    # Neighbours and batches.
    c.pool_size = 100_000
    c.batch_size = 256
    c.max_concepts = 64  # K: concept columns per batch (padded with "" and label 0)
    c.max_masked = 8  # of which masked captions, at most
    c.max_present = 8  # R: `+1` per caption at most (the loss's max_present)
    c.min_batch_count = 2  # a batch concept is shared by at least this many members
    c.label_rule = "attribute"  # none | complete | attribute
    # At most this many members of one caption (same normalised words) per batch; 0 = no cap.
    # Two copies of a caption are a false negative of the plain SigLIP term, and BM25 ranks the
    # anchor's exact copies first, so uncapped a batch can be B copies of "a star". A couple of
    # copies are kept: they are conditional positives of the caption's concepts.
    c.max_duplicates = 2
    # Which batch concepts to keep (an experiment arm: which kind carries the signal):
    # all (the mix: n-grams + masked captions) | unigram (one-word n-grams) | attribute_noun
    # (bigrams "attribute adjective + noun", e.g. "red circle") | masked (masked captions only,
    # at most max_masked per batch). Batch members are the same for every value; a batch with
    # no concept of the kind is written with none (manifest batches.concepts_per_batch["0"]).
    c.concept_kinds = "all"

    # Output.
    c.batches_per_shard = 64
    # group_size:1: one record per chunk, so reading a batch's rows touches only those rows;
    # snappy: cheap to (de)compress (images are already compressed).
    c.array_record_options = "group_size:1,snappy"
    c.tokenizer_model = ""  # an existing SentencePiece model with <M>; "" trains one
    c.tokenizer_vocab_size = 8000
    # BPE: on a small-vocabulary corpus (the synthetic world's ~30 words) the unigram trainer
    # stops at ~50 pieces and spells words letter by letter; BPE keeps whole words.
    c.tokenizer_type = "bpe"
    c.tokenizer_sample = 100_000  # captions the tokenizer is trained on (first, batch order)
    c.hash_inputs = True  # sha256 of every input file into the manifest
    c.num_workers = 2  # local runner processes
    c.beam_options = ""  # extra Beam pipeline options, e.g. "--runner=DataflowRunner ..."
    c.progress = True

    return variant(c, VARIANTS, arg)


def validate(c: ml_collections.ConfigDict) -> None:
    """Fails with a message naming the field when a value is unusable."""

    def need(ok: bool, field: str, why: str) -> None:
        if not ok:
            raise ValueError(f"config.{field}={c[field]!r}: {why}")

    for f in (
        "batch_size",
        "max_concepts",
        "max_present",
        "pool_size",
        "batches_per_shard",
        "max_ngram",
        "min_df",
        "max_caption_chars",
        "tokenizer_vocab_size",
        "tokenizer_sample",
        "num_workers",
        "tfds_unit_size",
    ):
        need(isinstance(c[f], int) and c[f] >= 1, f, "must be an int >= 1")
    need(c.batch_size >= 2, "batch_size", "a batch needs at least 2 captions")
    need(0 <= c.max_masked <= c.max_concepts, "max_masked", "must be in [0, max_concepts]")
    need(c.max_present <= c.max_concepts, "max_present", "must be <= max_concepts")
    need(c.pool_size >= c.batch_size, "pool_size", "must be >= batch_size")
    need(0.0 < c.max_df_frac <= 1.0, "max_df_frac", "must be in (0, 1]")
    need(c.min_batch_count >= 1, "min_batch_count", "must be >= 1")
    need(
        isinstance(c.max_duplicates, int)
        and not isinstance(c.max_duplicates, bool)
        and c.max_duplicates >= 0,
        "max_duplicates",
        "must be an int >= 0 (0 = no cap)",
    )
    need(c.label_rule in labels.RULES, "label_rule", f"must be one of {sorted(labels.RULES)}")
    need(c.max_ngram <= 8, "max_ngram", "n-grams longer than 8 words are never shared")
    need(
        isinstance(c.concept_kinds, str) and c.concept_kinds in kinds.KINDS,
        "concept_kinds",
        f"must be one of {', '.join(kinds.KINDS)}",
    )
    need(
        c.concept_kinds != "masked" or c.max_masked >= 1,
        "concept_kinds",
        "'masked' keeps only masked captions, so it needs max_masked >= 1",
    )
