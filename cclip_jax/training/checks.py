"""The checks a run passes before anything is built: the config, then the data against it.

Every check raises ValueError naming the config field (`config.<field>=<value> ...`), which
the command line prints as one line (`cli.run`).
"""

from __future__ import annotations

import ml_collections

from cclip_jax import data as data_lib
from cclip_jax import losses, models
from cclip_jax.training.objective import COND_FORMS, LOSSES

LABEL_MODES = ("all", "positive_only")
MAX_PRESENT_NAMES = ("manifest", "dense")  # or an int R >= 1


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Static checks of the training config; raises ValueError naming the field."""
    for field in ("total_steps", "batch_size", "log_every_steps", "checkpoint_every_steps"):
        if not isinstance(config[field], int) or config[field] < 1:
            raise ValueError(f"config.{field}={config[field]!r} must be an int >= 1")
    if config.data.mode not in data_lib.MODES:
        raise ValueError(f"config.data.mode={config.data.mode!r} is not one of {data_lib.MODES}")
    if config.loss not in LOSSES:
        raise ValueError(f"config.loss={config.loss!r} is not one of {LOSSES}")
    if config.data.mode == "baseline" and config.cond_weight != 0:
        raise ValueError(
            "config.cond_weight must be 0 with config.data.mode='baseline' "
            "(i.i.d. batches carry no concept labels)"
        )
    if config.loss == "softmax" and config.cond_weight != 0:
        raise ValueError("config.cond_weight must be 0 with config.loss='softmax' (CLIP arm)")
    if config.labels not in LABEL_MODES:
        raise ValueError(f"config.labels={config.labels!r} is not one of {LABEL_MODES}")
    if config.cond_weight < 0:
        raise ValueError(f"config.cond_weight={config.cond_weight} must be >= 0")
    if config.cond_form not in COND_FORMS:
        raise ValueError(f"config.cond_form={config.cond_form!r} is not one of {COND_FORMS}")
    if config.cond_form == "pool" and not config.model.get("pool_conditional", False):
        raise ValueError(
            "config.cond_form='pool' needs config.model.pool_conditional=True (the "
            "image tower's concept-pooled embeddings)"
        )
    if config.cond_normalize not in losses.NORMALIZE:
        raise ValueError(
            f"config.cond_normalize={config.cond_normalize!r} is not one of {losses.NORMALIZE}"
        )
    if not 0 <= config.cross_positive_weight <= 1:
        raise ValueError(
            f"config.cross_positive_weight={config.cross_positive_weight} must be in [0, 1]"
        )
    sched = config.cond_schedule
    for field in ("zero_frac", "ramp_frac"):
        if not 0 <= sched[field] <= 1:
            raise ValueError(f"config.cond_schedule.{field}={sched[field]} must be in [0, 1]")
    if sched.zero_frac + sched.ramp_frac > 1:
        raise ValueError("config.cond_schedule.zero_frac + ramp_frac must be <= 1")
    if config.tags_weight < 0 or (config.tags_weight and config.cond_weight):
        raise ValueError(
            f"config.tags_weight={config.tags_weight} must be >= 0, and 0 unless "
            "config.cond_weight is 0 (the two terms share cond_t and cond_b)"
        )
    if config.tags_weight and (config.data.mode == "baseline" or config.model.gate != "identity"):
        raise ValueError(
            "config.tags_weight needs curated batches (config.data.mode) and "
            "config.model.gate='identity' (it scores raw concept embeddings)"
        )
    mp = config.max_present
    bound = isinstance(mp, int) and not isinstance(mp, bool) and mp >= 1
    if mp not in MAX_PRESENT_NAMES and not bound:
        raise ValueError(
            f"config.max_present={mp!r} must be 'manifest' (the curated data's R), "
            "'dense' or an int R >= 1 (formerly -1 and 0 meant 'manifest' and "
            "'dense')"
        )
    if config.plain_multi_positive and config.loss != "sigmoid":
        raise ValueError("config.plain_multi_positive needs config.loss='sigmoid'")
    models.tower_kwargs(config.model)  # unknown sizes etc. raise naming config.model.<field>


def check_data(config: ml_collections.ConfigDict, data: data_lib.Dataset, ways: int) -> None:
    """Checks of the opened data (`data.source`'s manifest, `data.tokenizer`) against the config
    and the `ways` devices the batch is split over (ValueError naming the field)."""
    source, tokenizer_vocab = data.source, data.tokenizer.vocab_size()
    where = source.curated_dir
    if source.batch_size != config.batch_size:
        raise ValueError(
            f"config.batch_size={config.batch_size} differs from the curated batch "
            f"size {source.batch_size} of {where} (curated batches stay whole)"
        )
    if config.batch_size % ways:
        raise ValueError(
            f"config.batch_size={config.batch_size} is not divisible by the "
            f"{ways} devices the batch is split over (config.mesh)"
        )
    if source.max_concepts % ways:
        raise ValueError(
            f"max_concepts={source.max_concepts} of {where} is not divisible by "
            f"the {ways} devices concepts are split over (config.mesh)"
        )
    if tokenizer_vocab > config.model.text.vocab_size:
        raise ValueError(
            f"config.model.text.vocab_size={config.model.text.vocab_size} is "
            f"smaller than the tokenizer's {tokenizer_vocab} pieces"
        )
    if config.max_present not in MAX_PRESENT_NAMES and config.max_present > source.max_concepts:
        raise ValueError(
            f"config.max_present={config.max_present} > max_concepts {source.max_concepts}"
        )
