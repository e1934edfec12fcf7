"""The Grain input pipeline and global-array assembly.

    ds = build_dataset(spec, process_index=jax.process_index(), process_count=...)
    it = iter(ds)                        # a Grain DatasetIterator; it.get_state()/set_state()
    local = next(it)                     # this process's slice of the step's global batch
    batch = make_global_batch(local, rows)   # global jax.Arrays, first axis laid out as `rows`

The dataset is a `MapDataset` over step indices (`range(2**62)`, lazily): element `s` is the slice
of global batch `s`, so the stream is a pure function of (curated folder, mode, seed, process) and
an iterator restored at step `s` continues exactly where a killed run left off.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding

from cclip_jax.data.source import BatchSliceSource
from cclip_jax.data.transforms import ProcessSlice, Tokenizer

_STEPS = 2**62  # "forever": Grain MapDatasets are lazy, nothing is materialised
# Fields that become device arrays (`batch`, the curated batch index, stays on the host).
ARRAY_FIELDS = ("images", "text", "concepts", "labels", "text_cut", "concepts_cut")
# Fields only some specs make (`DataSpec.hard_negatives`); they become device arrays when present.
OPTIONAL_ARRAY_FIELDS = ("hard_text", "hard_ok")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Everything the pipeline needs (built from `config.data` and `config.model`).

    Attributes:
      curated_dir: curation output folder.
      mode: `curated` (whole curated batches) or `baseline` (i.i.d. batches of the same pairs).
      seed: shuffling and augmentation seed.
      image_size: output side S.
      max_len: token length L of captions and concepts (longer ones are cut and flagged).
      tokenizer: SentencePiece model path ("" = the one next to the shards).
      pad_id: the id texts are padded with (`config.model.text.pad_id`).
      sticky_eos: SigLIP's sticky EOS (`config.model.text.sticky_eos`; see `Tokenizer`).
      max_shift: augmentation translation in pixels (0 = none).
      brightness: augmentation brightness jitter (in the [-1, 1] image range).
      num_workers: Grain worker processes (0 = in this process).
      prefetch: elements buffered per worker / thread.
      hard_negatives: also make `hard_text` int32 `[b, L]` and `hard_ok` int8 `[b]`, each
        caption's NegCLIP hard negative (`hard_negatives.swap_hard_negative`; see
        `ProcessSlice`), for the `negclip` arm (`config.data.hard_negatives`).
    """

    curated_dir: str
    mode: str = "curated"
    seed: int = 0
    image_size: int = 32
    max_len: int = 16
    tokenizer: str = ""
    pad_id: int = 0
    sticky_eos: bool = False
    max_shift: int = 2
    brightness: float = 0.05
    num_workers: int = 0
    prefetch: int = 2
    hard_negatives: bool = False


def build_dataset(spec: DataSpec, *, process_index: int = 0, process_count: int = 1,
                  start_step: int = 0) -> grain.IterDataset:
    """The Grain dataset of this process's batch slices (see module docstring).

    Each element: `images` float32 `[b, S, S, 3]`, `text` int32 `[b, L]`, `concepts` int32
    `[K/P, L]`, `labels` int8 `[b, K]`, `text_cut` int8 `[b]`, `concepts_cut` int8 `[K/P]`,
    `batch` int32 `[]`, with `b = B / P` (see `ProcessSlice`); with `spec.hard_negatives` also
    `hard_text` int32 `[b, L]` and `hard_ok` int8 `[b]`.
    `start_step` skips elements without reading them (checkpoints restore the iterator state
    instead; this is for evaluation and benchmarks).
    """
    source = BatchSliceSource(spec.curated_dir, spec.mode, process_index, process_count,
                              spec.seed)
    if source.max_concepts % process_count:
        raise ValueError(f"max_concepts={source.max_concepts} of {spec.curated_dir} does not "
                         f"split over {process_count} processes")
    tokenizer = Tokenizer(spec.tokenizer or source.tokenizer_path, spec.max_len, spec.pad_id,
                          spec.sticky_eos)
    transform = ProcessSlice(tokenizer, spec.image_size, spec.max_shift, spec.brightness,
                             process_index, process_count, spec.hard_negatives)
    ds = (
        grain.MapDataset.range(start_step, _STEPS)
        .map(source.__getitem__)
        .random_map(transform, seed=spec.seed)
    )
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=spec.prefetch))
    if spec.num_workers > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=spec.num_workers, per_worker_buffer_size=spec.prefetch))
    return it_ds


def make_global_batch(local: dict[str, Any], rows: NamedSharding) -> dict[str, jax.Array]:
    """This process's slice -> global `jax.Array`s, first axis split as `rows` says (the
    trainer's `sharding.BatchSplit.rows`: every field splits along its rows or concept rows).

    Global shapes: `images [B, S, S, 3]`, `text [B, L]`, `concepts [K, L]`, `labels [B, K]`,
    `text_cut [B]`, `concepts_cut [K]`, and where `local` has them (`DataSpec.hard_negatives`)
    `hard_text [B, L]`, `hard_ok [B]`, split along the batch like `text`.
    """
    out = {}
    for field in (*ARRAY_FIELDS, *(f for f in OPTIONAL_ARRAY_FIELDS if f in local)):
        value = np.asarray(local[field])
        global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
        out[field] = jax.make_array_from_process_local_data(rows, value, global_shape)
    return out
