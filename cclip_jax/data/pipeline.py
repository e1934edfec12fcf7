"""The Grain input pipeline and global-array assembly.

    spec = DataSpec.from_config(config)  # config.data.curated_dir must be set
    ds = build_dataset(spec, process_index=jax.process_index(), process_count=...)
    ds.source, ds.tokenizer              # opened once: the manifest's B, K, R; the vocabulary
    it = iter(ds)                        # a Grain DatasetIterator; it.get_state()/set_state()
    local = next(it)                     # this process's slice of the step's global batch
    batch = make_global_batch(local, rows)   # global jax.Arrays, first axis laid out as `rows`

The dataset is a `MapDataset` over step indices (`range(2**62)`, lazily): element `s` is the slice
of global batch `s`, so the stream is a pure function of (curated folder, mode, seed, process) and
an iterator restored at step `s` continues exactly where a killed run left off.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding

from cclip_jax.data import workers
from cclip_jax.data.source import BatchSliceSource
from cclip_jax.data.transforms import ProcessSlice, Tokenizer, text_options, tokenizer_path

if TYPE_CHECKING:
    import ml_collections

_STEPS = 2**62  # "forever": Grain MapDatasets are lazy, nothing is materialised
# Fields that become device arrays (`batch`, the curated batch index, stays on the host).
ARRAY_FIELDS = ("images", "text", "concepts", "labels", "text_cut", "concepts_cut")
# Fields only some specs make (`DataSpec.hard_negatives`); they become device arrays when present.
OPTIONAL_ARRAY_FIELDS = ("hard_text", "hard_ok")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Everything the pipeline needs, read from the config by `from_config` (the config is the
    one source of every value: the fields have no defaults of their own).

    Attributes:
      curated_dir: curation output folder (`config.data.curated_dir`).
      mode: `curated` (whole curated batches) or `baseline` (i.i.d. batches of the same pairs).
      seed: shuffling and augmentation seed (`config.seed`).
      image_size: output side S (`config.model.image.image_size`).
      max_len: token length L of captions and concepts (longer ones are cut and flagged).
      tokenizer: `config.data.tokenizer`, a SentencePiece model path ("" = the one next to the
        shards; `transforms.tokenizer_path` resolves it).
      pad_id: the id texts are padded with (`config.model.text.pad_id`).
      sticky_eos: SigLIP's sticky EOS (`config.model.text.sticky_eos`; see `Tokenizer`).
      lowercase: lower-case texts before tokenizing (`config.model.text.lowercase`; SigLIP).
      max_shift: augmentation translation in pixels (0 = none).
      brightness: augmentation brightness jitter (in the [-1, 1] image range).
      num_workers: Grain worker processes (0 = in this process).
      prefetch: elements buffered per worker / thread.
      hard_negatives: also make `hard_text` int32 `[b, L]` and `hard_ok` int8 `[b]`, each
        caption's NegCLIP hard negative (`hard_negatives.swap_hard_negative`; see
        `ProcessSlice`), for the `negclip` arm (`config.data.hard_negatives`).
    """

    curated_dir: str
    mode: str
    seed: int
    image_size: int
    max_len: int
    tokenizer: str
    pad_id: int
    sticky_eos: bool
    lowercase: bool
    max_shift: int
    brightness: float
    num_workers: int
    prefetch: int
    hard_negatives: bool

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> DataSpec:
        """The spec of a training config (`config.data`, `config.model`, `config.seed`).

        Raises:
          ValueError: naming `config.data.curated_dir` when it is empty (the demo's data is
            built by `cclip_jax.curation.demo_data.ensure_demo_data`, not here).
        """
        d, text = config.data, config.model.text
        if not d.curated_dir:
            raise ValueError(
                "config.data.curated_dir is empty: set it to a curated folder (python -m "
                "cclip_jax.curate), or build the demo data first "
                "(cclip_jax.curation.demo_data.ensure_demo_data, as python -m cclip_jax.main does)"
            )
        return cls(
            curated_dir=d.curated_dir,
            mode=d.mode,
            seed=int(config.seed),
            image_size=int(config.model.image.image_size),
            tokenizer=d.tokenizer,
            **text_options(text),
            max_shift=int(d.max_shift),
            brightness=float(d.brightness),
            num_workers=int(d.num_workers),
            prefetch=int(d.prefetch),
            hard_negatives=bool(d.hard_negatives),
        )


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One process's input pipeline and what was opened to build it, once: the checks, the
    initial biases and the evaluator read `source` and `tokenizer` instead of opening them again.

    Attributes:
      spec: what it was built from.
      source: the opened curated folder (`BatchSliceSource`: `curated_dir`, `manifest`,
        `batch_size` B, `max_concepts` K, `max_present` R, `num_batches`).
      tokenizer: the `Tokenizer` the pipeline tokenizes with.
      grain: the Grain `IterDataset` of this process's batch slices (see `build_dataset`);
        `iter(dataset)` starts an iterator over it (`get_state`/`set_state` for checkpoints).
    """

    spec: DataSpec
    source: BatchSliceSource
    tokenizer: Tokenizer
    grain: grain.IterDataset

    def __iter__(self) -> grain.DatasetIterator:
        return iter(self.grain)


def build_dataset(
    spec: DataSpec, *, process_index: int = 0, process_count: int = 1, start_step: int = 0
) -> Dataset:
    """This process's `Dataset`: the source and tokenizer opened, the Grain pipeline over them
    (see module docstring; nothing is read until an iterator asks).

    Each element: `images` float32 `[b, S, S, 3]`, `text` int32 `[b, L]`, `concepts` int32
    `[K/P, L]`, `labels` int8 `[b, K]`, `text_cut` int8 `[b]`, `concepts_cut` int8 `[K/P]`,
    `batch` int32 `[]`, with `b = B / P` (see `ProcessSlice`); with `spec.hard_negatives` also
    `hard_text` int32 `[b, L]` and `hard_ok` int8 `[b]`.
    A batch whose shard is corrupt is instead the marker `{"batch", "element", "corrupt"}`
    (`BatchSliceSource`), which the trainer names or skips (`training.corrupt`) and
    `make_global_batch` refuses.
    `start_step` skips elements without reading them (checkpoints restore the iterator state
    instead; this is for evaluation and benchmarks).
    """
    source = BatchSliceSource(spec.curated_dir, spec.mode, process_index, process_count, spec.seed)
    if source.max_concepts % process_count:
        raise ValueError(
            f"max_concepts={source.max_concepts} of {spec.curated_dir} does not "
            f"split over {process_count} processes"
        )
    tokenizer = Tokenizer(
        tokenizer_path(spec.tokenizer, spec.curated_dir),
        spec.max_len,
        spec.pad_id,
        spec.sticky_eos,
        spec.lowercase,
    )
    transform = ProcessSlice(
        tokenizer,
        spec.image_size,
        spec.max_shift,
        spec.brightness,
        process_index,
        process_count,
        spec.hard_negatives,
    )
    ds = (
        grain.MapDataset.range(start_step, _STEPS)
        .map(source.__getitem__)
        .random_map(transform, seed=spec.seed)
    )
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=spec.prefetch))
    if spec.num_workers > 0:
        # Workers end with this process; each element's shared memory is unlinked on arrival
        # (see `workers`: otherwise SIGKILL orphans the workers, and the last batches leak).
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=spec.num_workers, per_worker_buffer_size=spec.prefetch
            ),
            worker_init_fn=workers.exit_with_parent,
        ).map(workers.release_shared_memory)
    return Dataset(spec, source, tokenizer, it_ds)


def make_global_batch(local: dict[str, Any], rows: NamedSharding) -> dict[str, jax.Array]:
    """This process's slice -> global `jax.Array`s, first axis split as `rows` says (the
    trainer's `sharding.BatchSplit.rows`: every field splits along its rows or concept rows).

    Global shapes: `images [B, S, S, 3]`, `text [B, L]`, `concepts [K, L]`, `labels [B, K]`,
    `text_cut [B]`, `concepts_cut [K]`, and where `local` has them (`DataSpec.hard_negatives`)
    `hard_text [B, L]`, `hard_ok [B]`, split along the batch like `text`.
    """
    if "corrupt" in local:  # the source's marker (see `BatchSliceSource`): no arrays
        raise ValueError(f"data element {local['element']}: {local['corrupt']}")
    out = {}
    for field in (*ARRAY_FIELDS, *(f for f in OPTIONAL_ARRAY_FIELDS if f in local)):
        value = np.asarray(local[field])
        global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
        out[field] = jax.make_array_from_process_local_data(rows, value, global_shape)
    return out
