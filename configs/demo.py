"""The demo: synthetic world -> curation -> tiny CCLIP towers on CPU (minutes on 2 cores).

    python -m cclip_jax.main --config=configs/demo.py --workdir=/tmp/cclip_demo

The first run writes the synthetic world and its curation under `config.data.cache_dir`
(`~/.cache/cclip_jax`); later runs reuse them. Pass `--config=configs/demo.py:smoke` for a
2-step run on a tiny world (tests). The demo itself is `cclip_jax.config.base.demo_config`.
"""

from __future__ import annotations

import ml_collections

from cclip_jax.config import base, variant

VARIANTS = {
    "smoke": {  # tests: tiny world, few steps, no Grain workers
        "batch_size": 16,
        "total_steps": 2,
        "log_every_steps": 1,
        "checkpoint_every_steps": 1,
        "optim.warmup_steps": 1,
        "data.synthetic.num_train": 128,
        "data.curation.pool_size": 128,
        "data.curation.batches_per_shard": 4,
        "data.curation.tokenizer_vocab_size": 128,
        "data.num_workers": 0,
        "model.image.depth": 1,
        "model.text.depth": 1,
        "progress": False,
        "compilation_cache_dir": "",
        "eval.batch_size": 16,
        "eval.synthetic.num_items": 4,
        "eval.synthetic.splits": ("iid",),
        "eval.synthetic.retrieval_images": 8,
        "eval.synthetic.captions_per_image": 2,
        "eval.synthetic.cond_queries": 4,
        "eval.synthetic.cond_pool": 16,
    },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return variant(base.demo_config(), VARIANTS, arg)
