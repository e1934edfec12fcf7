"""CLIP baseline, B/16 at 224 px: softmax loss on i.i.d. batches of the curated pairs.

    --config=configs/clip_b16.py:gpu   (or :tpu)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common


def get_config(arg: str | None = "gpu"):
    c = common.b16_config(arg or "gpu")
    c.loss = "softmax"
    c.cond_weight = 0.0
    c.data.mode = "baseline"
    return c
