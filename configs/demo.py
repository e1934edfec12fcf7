"""The demo: synthetic world -> curation -> tiny CCLIP towers on CPU (minutes on 2 cores).

    python -m cclip_jax.main --config=configs/demo.py --workdir=/tmp/cclip_demo

The first run writes the synthetic world and its curation under `config.data.cache_dir`
(`~/.cache/cclip_jax`); later runs reuse them. Pass `--config=configs/demo.py:smoke` for a
2-step run on a tiny world (tests).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common


def get_config(arg: str | None = None):
    c = common.base_config("mu")
    c.model.image.variant = "mu/8"
    c.model.text.depth = 2
    c.model.image.depth = 2
    c.batch_size = 64
    # λ = 1 (configs/common.py, "What λ means"): under the per-triple normalisation the
    # conditional gradient at initialisation is a steady fraction of the plain one at every
    # B and K (docs/training.md), so the demo runs at the value the B/16 configs use.
    c.cond_weight = 1.0
    # (+1, 0) triples at half the weight of (+1, -1): at weight 1 the two are the same
    # negative, and reading -1 labels as 0 (the experiment's pos-only arm) would change nothing.
    c.unknown_weight = 0.5
    c.total_steps = 600
    c.log_every_steps = 10
    c.checkpoint_every_steps = 100
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 50
    c.mesh.data = -1
    c.compilation_cache_dir = "~/.cache/cclip_jax/xla"
    if arg == "smoke":  # tests: tiny world, few steps, no Grain workers
        c.batch_size = 16
        c.total_steps = 2
        c.log_every_steps = 1
        c.checkpoint_every_steps = 1
        c.optim.warmup_steps = 1
        c.data.synthetic.num_train = 128
        c.data.curation.pool_size = 128
        c.data.curation.batches_per_shard = 4
        c.data.curation.tokenizer_vocab_size = 128
        c.data.num_workers = 0
        c.model.image.depth = c.model.text.depth = 1
        c.progress = False
        c.compilation_cache_dir = ""
        c.eval.batch_size = 16
        c.eval.synthetic.update(dict(num_items=4, splits=("iid",), retrieval_images=8,
                                     captions_per_image=2, cond_queries=4, cond_pool=16))
    return c
