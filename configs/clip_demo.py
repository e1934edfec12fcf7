"""CLIP baseline at demo scale: softmax contrastive loss on i.i.d. batches of the demo's pairs.

    --config=configs/clip_demo.py           i.i.d. batches (the usual CLIP set-up)
    --config=configs/clip_demo.py:curated   the curated batches (to isolate the batch effect)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo


def get_config(arg: str | None = None):
    c = demo.get_config()
    c.loss = "softmax"
    c.cond_weight = 0.0
    c.data.mode = "curated" if arg == "curated" else "baseline"
    return c
