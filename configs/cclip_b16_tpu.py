"""CCLIP B/16 at 224 px on TPU: bfloat16 activations, curated data at scale.

    --config=configs/cclip_b16_tpu.py --config.data.curated_dir=/path/to/curated
See launch/tpu_pod.sh for the multi-host command.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common


def get_config(arg: str | None = None):
    del arg
    return common.b16_config("tpu")
