"""SigLIP baseline, B/16 at 224 px: CCLIP's B/16 config with λ = 0.

--config=configs/siglip_b16.py:gpu   (or :tpu); append ,baseline for i.i.d. batches
"""

from __future__ import annotations

import ml_collections

from cclip_jax.config import base, variant

VARIANTS = {"baseline": {"data.mode": "baseline"}}  # after the platform: `:tpu,baseline`


def get_config(arg: str | None = "gpu") -> ml_collections.ConfigDict:
    platform, _, extra = (arg or "gpu").partition(",")
    c = base.b16_config(platform)
    c.cond_weight = 0.0
    return variant(c, VARIANTS, extra or None)
