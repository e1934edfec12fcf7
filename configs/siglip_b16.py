"""SigLIP baseline, B/16 at 224 px: CCLIP's B/16 config with λ = 0.

    --config=configs/siglip_b16.py:gpu   (or :tpu); append ,baseline for i.i.d. batches
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common


def get_config(arg: str | None = "gpu"):
    platform, *rest = (arg or "gpu").split(",")
    c = common.b16_config(platform)
    c.cond_weight = 0.0
    if "baseline" in rest:
        c.data.mode = "baseline"
    return c
