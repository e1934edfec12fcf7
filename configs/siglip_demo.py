"""SigLIP baseline at demo scale: the demo's towers, data and steps with λ = 0.

--config=configs/siglip_demo.py            same curated batches as the demo (λ = 0 only)
--config=configs/siglip_demo.py:baseline   i.i.d. batches of the same pairs (plain SigLIP)
"""

from __future__ import annotations

import ml_collections

from cclip_jax.config import base, variant

VARIANTS = {"baseline": {"data.mode": "baseline"}}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base.demo_config()
    c.cond_weight = 0.0
    return variant(c, VARIANTS, arg)
