"""CLIP baseline at demo scale: softmax contrastive loss on i.i.d. batches of the demo's pairs.

--config=configs/clip_demo.py           i.i.d. batches (the usual CLIP set-up)
--config=configs/clip_demo.py:curated   the curated batches (to isolate the batch effect)
"""

from __future__ import annotations

import ml_collections

from cclip_jax.config import base, variant

VARIANTS = {"curated": {"data.mode": "curated"}}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base.demo_config()
    c.loss = "softmax"
    c.cond_weight = 0.0
    c.data.mode = "baseline"
    return variant(c, VARIANTS, arg)
