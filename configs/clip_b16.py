"""CLIP baseline, B/16 at 224 px: softmax loss on i.i.d. batches of the curated pairs.

--config=configs/clip_b16.py:gpu   (or :tpu)
"""

from __future__ import annotations

import ml_collections

from cclip_jax.config import base


def get_config(arg: str | None = "gpu") -> ml_collections.ConfigDict:
    c = base.b16_config(arg or "gpu")
    c.loss = "softmax"
    c.cond_weight = 0.0
    c.data.mode = "baseline"
    return c
