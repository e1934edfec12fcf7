"""SigLIP baseline at demo scale: the demo's towers, data and steps with λ = 0.

    --config=configs/siglip_demo.py            same curated batches as the demo (λ = 0 only)
    --config=configs/siglip_demo.py:baseline   i.i.d. batches of the same pairs (plain SigLIP)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo


def get_config(arg: str | None = None):
    c = demo.get_config()
    c.cond_weight = 0.0
    if arg == "baseline":
        c.data.mode = "baseline"
    return c
