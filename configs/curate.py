"""Curation settings: `python -m cclip_jax.curate --config=configs/curate.py ...`.

Every field and its default: `cclip_jax.curation.settings.default_config`; `:small` gives
test-sized batches and pools. The runners check every field at start
(`cclip_jax.curation.settings.validate`) and fail with a message naming the field.

Override any field on the command line, e.g. `--config.batch_size=256 --config.label_rule=none`.
"""

from __future__ import annotations

import ml_collections

from cclip_jax.curation import settings


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return settings.default_config(arg)
