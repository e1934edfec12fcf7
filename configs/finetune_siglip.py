"""Fine-tune a pretrained SigLIP B/16 (big_vision .npz) with the CCLIP loss.

    --config=configs/finetune_siglip.py:gpu \
      --config.init_from=/path/to/webli_en_b16_224.npz \
      --config.data.tokenizer=/path/to/siglip_tokenizer.model \
      --config.data.curated_dir=/path/to/curated

The towers get a tenth of the learning rate of the temperatures (`optim.lr_mults`; set one to
0 to freeze that tower). Captions must be tokenized with SigLIP's own SentencePiece model.
"""

from __future__ import annotations

import ml_collections

from cclip_jax import models
from cclip_jax.config import base


def get_config(arg: str | None = "gpu") -> ml_collections.ConfigDict:
    c = base.b16_config(arg or "gpu")
    c.model = models.siglip_config("B/16", 224)
    c.model.dtype = "bfloat16"
    c.init_from = "/path/to/siglip_b16_224.npz"
    c.data.tokenizer = "/path/to/siglip_tokenizer.model"
    c.total_steps = 10_000
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 500
    c.optim.lr_mults.img = 0.1
    c.optim.lr_mults.txt = 0.1
    c.optim.lr_mults.temperature = 1.0
    return c
