"""The manifest of a run (from `runs.finish`, both runners): tokenizer next to the shards, then the
manifest."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable
from typing import Any

import ml_collections

from cclip_jax.curation import adapters, shards, tokenizer

# Bumped when the curator writes different batches, concepts or tokenizer for the same
# settings (2: `▁<M>` is one piece; 3: the manifest's batches carry `triple_sums`; 4: copies
# of a caption beyond what one pool can cap are spread over other pools, `neighbours.
# spread_key`), so caches keyed on the settings are not reused stale.
CURATOR_VERSION = 4


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_inputs(units: list[Any], hash_inputs: bool) -> list[dict[str, Any]]:
    """One entry per input unit: path, size and (optionally) sha256 of the file."""
    out = []
    for unit in units:
        d = adapters.unit_fingerprint(unit)
        path = unit if isinstance(unit, str) else unit[0]
        if hash_inputs and os.path.isfile(path):
            d["sha256"] = _sha256(path)
        out.append(d)
    return out


def make_tokenizer(
    out_dir: str,
    config: ml_collections.ConfigDict,
    captions: Iterable[str] | None,
    shard_files: list[str],
) -> str:
    """Installs the given tokenizer, or trains one on the first `tokenizer_sample` written
    captions in batch order (`captions` when the caller has them, else read from this run's
    `shard_files`, in order: never from whatever else lies in the folder)."""
    path = os.path.join(out_dir, shards.TOKENIZER)
    if config.tokenizer_model:
        return tokenizer.install(config.tokenizer_model, path)
    captions = (
        captions
        if captions is not None
        else (
            cap for name in shard_files for cap in shards.iter_captions(os.path.join(out_dir, name))
        )
    )
    return tokenizer.train(
        itertools.islice(captions, config.tokenizer_sample),
        path,
        vocab_size=config.tokenizer_vocab_size,
        model_type=config.get("tokenizer_type", "bpe"),
    )


def make_counts(
    accepted: int,
    skipped: dict[str, int],
    leftover_dropped: int,
    written: int,
    concepts_by_kind: dict[str, int],
) -> dict[str, Any]:
    """The manifest's `counts`, which add up: read = accepted + skipped (summed over reasons),
    accepted = written + leftover_dropped."""
    if accepted != written + leftover_dropped:  # a bug, not bad input: never write such a run
        raise RuntimeError(
            f"accepted {accepted} != written {written} + leftover_dropped {leftover_dropped}"
        )
    return {
        "read": accepted + sum(skipped.values()),
        "accepted": accepted,
        "skipped": skipped,
        "leftover_dropped": leftover_dropped,
        "written": written,
        "concepts_by_kind": concepts_by_kind,
    }


def finish(
    out_dir: str,
    config: ml_collections.ConfigDict,
    *,
    runner: str,
    input_path: str,
    input_format: str,
    units: list[Any],
    shard_list: list[dict[str, Any]],
    counts: dict[str, Any],
    batch_stats: dict[str, Any],
    concept_stats: dict[str, Any],
    random_sharing: float,
    bad_input: dict[str, Any],
    captions: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Writes the tokenizer, then `manifest.json` (atomically, last). Returns the manifest."""
    make_tokenizer(out_dir, config, captions, [s["file"] for s in shard_list])
    manifest = {
        "format": shards.FORMAT,
        "runner": runner,
        "curator_version": CURATOR_VERSION,
        "input": {
            "path": os.path.abspath(input_path),
            "format": input_format,
            "units": describe_inputs(units, config.hash_inputs),
        },
        "settings": config.to_dict(),
        "batch_size": config.batch_size,
        "max_concepts": config.max_concepts,
        "max_present": config.max_present,
        "num_batches": sum(s["num_batches"] for s in shard_list),
        "num_examples": sum(s["num_batches"] for s in shard_list) * config.batch_size,
        "shards": shard_list,
        "tokenizer": shards.TOKENIZER,
        "counts": counts,
        "bad_input": bad_input,
        "concepts": concept_stats,
        "batches": batch_stats,
        "sharing": {"curated": batch_stats["curated_sharing"], "random": round(random_sharing, 4)},
    }
    shards.write_manifest(out_dir, manifest)
    return manifest
