"""CCLIP B/16 at 224 px: bfloat16 activations, curated data at scale.

    --config=configs/cclip_b16.py:gpu --config.data.curated_dir=/path/to/curated   (or :tpu)
See launch/gpu_slurm.sh and launch/tpu_pod.sh for the multi-host commands; the platforms
differ in batch size and mesh (`cclip_jax.config.base.B16_PLATFORMS`).
"""

from __future__ import annotations

import ml_collections

from cclip_jax.config import base


def get_config(arg: str | None = "gpu") -> ml_collections.ConfigDict:
    return base.b16_config(arg or "gpu")
