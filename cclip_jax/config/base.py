"""The training configs that `configs/*.py` share: the layout, the B/16 and the demo builders.

Top-level names other tools rely on: `total_steps`, `checkpoint_every_steps`, `log_every_steps`,
`seed`, `batch_size` (the GLOBAL batch; curated data must have been curated at this size).

    loss            'sigmoid' (SigLIP + cond_weight · CCLIP) | 'softmax' (CLIP)
    cond_weight     λ of the conditional term (0 = SigLIP baseline); see "What λ means" below
    cond_form       'sigmoid' (CCLIP's gated sigmoid) | 'rank' (a multi-positive softmax over
                    the gated logits, both directions, no bias: no constant-cosine collapse) |
                    'pool' (the image MAP head pools each image per concept, query
                    probe + W_q·c_k; sigmoid of s_c·cos(x_{i|k}, t_j) + b_c, ungated, same
                    label weights; needs model.pool_conditional=True; always dense: max_present
                    does not apply)
    cond_normalize  'triples' (the conditional loss is a weighted mean over its counted
                    triples) | 'batch' (its sum / B, as before: λ then scales with B and K)
    cond_schedule   {zero_frac, ramp_frac}: λ is 0 for zero_frac of the run, then ramps
                    linearly to cond_weight over ramp_frac of it (both 0: constant)
    cross_positive_weight  β, the weight of (+1, +1) triples of two different images (1 = the
                    proposal; 0 keeps only each image's own caption as conditional positive)
    concept_stop_gradient  no gradient through the concept embeddings (the text tower still
                    trains through the captions)
    plain_multi_positive   identical captions in a batch are positives of each other's
                    images in the plain term (curated batches can hold duplicates)
    tags_weight     weight of the image x concept classifier on the same labels (the `tags`
                    control; needs cond_weight = 0: it uses the conditional scale and bias)
    unknown_weight  weight of (+1, 0) triples
    labels          'all' | 'positive_only' (every -1 label read as 0: an experiment arm)
    max_present     R of the conditional loss: 'manifest' (the curated data's max_present),
                    'dense' (no bound) or an int R; the dense path also runs when 2R >= K (it
                    then computes no more logits; the run logs one line saying so).
                    `--config.max_present=8` and `--config.max_present=dense` both work
    mesh            {data, fsdp, tensor} sizes; one may be -1 (fills the remaining devices)
    sharding_rules  'dp' | 'fsdp' | 'tp' | 'fsdp_tp' (cclip_jax.training.sharding.RULES)
    model           cclip_jax.models config (towers, embed_dim, dtype, gate, ...;
                    pool_conditional: the concept-query MAP head of cond_form 'pool')
    optim           AdamW: lr, warmup_steps, end_lr_frac, b1, b2, eps, weight_decay,
                    grad_clip_norm, lr_mults {img, txt, temperature} (0 freezes a group;
                    temperature: the four logit scales and biases)
    data            curated_dir (the curated folder; '' in the demo configs: `python -m
                    cclip_jax.main` first builds the synthetic demo data into cache_dir,
                    cclip_jax.curation.demo_data),
                    mode ('curated' | 'baseline'), synthetic {...}, curation {...} (overrides of
                    the curation defaults, cclip_jax.curation.settings.default_config),
                    tokenizer ('' = the curated one), hard_negatives (NegCLIP: each caption's
                    attribute/object swap, cclip_jax.data.hard_negatives, as a negative of its
                    image in the plain term), max_shift, brightness, num_workers (Grain
                    processes), prefetch
    init_from       '' | a SigLIP .npz | a cclip checkpoint folder (ignored when resuming)
    compilation_cache_dir  XLA persistent compilation cache ('' = off)
    distributed     call jax.distributed.initialize() (multi-host GPU/TPU)
    eval            evaluations during/after training (cclip_jax.evaluation.suite)

What λ means. With cond_normalize='triples' the conditional term is a mean log-loss per
counted triple, the plain term SigLIP's sum over a row's B pairs. At λ = 1 the conditional
gradient at initialisation is about 0.1-0.25x the plain one (per tower, mean over inits), and
that holds within a factor ~2 from B = 64 to 4096 and K = 16 to 256 (docs/training.md, "λ across
batch sizes", benchmarks/grad_ratio_bench.py). So one λ means the same at the demo's B = 64,
K = 16 as at B/16's B = 4k-32k, K = 64, and every config uses λ = 1.

Temperatures. model.bias_init / model.cond_bias_init left None start at the logit of each
term's positive rate (cclip_jax.losses.init); lr_mults.temperature lets the four scalars travel
in short runs (Adam moves a scalar by about lr per step).
"""

from __future__ import annotations

import ml_collections

from cclip_jax import models
from cclip_jax.config.overrides import variant


def base_config(size: str = "mu") -> ml_collections.ConfigDict:
    """Defaults for every training config; callers override what differs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 1000
    c.batch_size = 256
    c.log_every_steps = 10
    c.checkpoint_every_steps = 500
    c.max_checkpoints = 3
    c.async_checkpoints = True
    c.init_from = ""
    c.distributed = False
    c.progress = True
    # XLA's persistent compilation cache ("" = off): a restarted or repeated run skips compiling.
    c.compilation_cache_dir = ""

    c.loss = "sigmoid"
    c.cond_weight = 1.0
    c.cond_form = "sigmoid"
    c.cond_normalize = "triples"
    c.cond_schedule = ml_collections.ConfigDict(dict(zero_frac=0.0, ramp_frac=0.0))
    c.cross_positive_weight = 1.0
    c.concept_stop_gradient = False
    c.plain_multi_positive = False
    c.tags_weight = 0.0
    c.unknown_weight = 1.0
    # A str or an int: a field of type object (ml_collections locks a plain field to the type
    # of its first value). A copy through to_dict() or copy_and_resolve_references() locks it
    # to the type of the value it then holds.
    c.max_present = ml_collections.FieldReference("manifest", field_type=object)
    c.labels = "all"

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding_rules = "fsdp_tp"
    c.model = models.get_default_model_config(size)

    c.optim = ml_collections.ConfigDict(
        dict(
            lr=1e-3,
            warmup_steps=100,
            end_lr_frac=0.0,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=1e-4,
            grad_clip_norm=1.0,
            # Over T steps of warmup + cosine a scalar can travel about mult · lr · T / 2: at the
            # demo's lr 3e-3 and 600 steps, 0.9 at mult 1, too little to move a bias by the units
            # a batch of 64 needs; 10 lets it.
            lr_mults=ml_collections.ConfigDict({"img": 1.0, "txt": 1.0, "temperature": 10.0}),
        )
    )

    c.data = ml_collections.ConfigDict(
        dict(
            curated_dir="",
            mode="curated",
            cache_dir="~/.cache/cclip_jax",
            synthetic=ml_collections.ConfigDict(
                dict(num_train=4096, preset="natural", seed=0, image_size=32, num_eval=0)
            ),
            curation=ml_collections.ConfigDict(
                dict(
                    max_concepts=16,
                    max_masked=4,
                    max_present=8,
                    pool_size=1024,
                    batches_per_shard=16,
                    tokenizer_vocab_size=512,
                    num_workers=1,
                )
            ),
            tokenizer="",
            hard_negatives=False,
            max_shift=2,
            brightness=0.05,
            num_workers=1,
            prefetch=2,
            # A batch whose shard fails its checksum stops the run (after saving the last good
            # step) naming the file; True skips such batches, counting and logging each one.
            skip_corrupt_batches=False,
        )
    )
    c.eval = eval_config()
    return c


def eval_config() -> ml_collections.ConfigDict:
    """`config.eval`: what `cclip_jax.evaluation.suite` runs (see its docstring)."""
    e = ml_collections.ConfigDict()
    e.every_steps = 0  # 0: at the end of training only; -1: never
    e.report = True  # write DIR/report.html after each evaluation
    e.batch_size = 256
    e.synthetic = ml_collections.ConfigDict(
        dict(
            world_dir="",
            seed=1,
            num_items=100,
            splits=("iid", "compositional", "productivity"),
            retrieval_images=200,
            captions_per_image=5,
            cond_queries=50,
            cond_pool=300,
            blind=True,
        )
    )
    e.sugarcrepe = ml_collections.ConfigDict(dict(json_dir="", image_dir=""))
    e.aro = ml_collections.ConfigDict(dict(relation_json="", attribution_json="", image_dir=""))
    e.winoground = ml_collections.ConfigDict(dict(examples_jsonl="", image_dir=""))
    e.retrieval = ml_collections.ConfigDict(dict(karpathy_json="", image_root="", split="test"))
    e.zeroshot = ml_collections.ConfigDict(dict(folder="", tfds_dir="", tfds_split="test"))
    return e


# What differs between the platforms of the B/16 configs (`configs/cclip_b16.py:gpu`, ...).
B16_PLATFORMS = {
    "gpu": {"batch_size": 4096, "mesh.fsdp": 8},  # FSDP within an 8-GPU host
    "tpu": {"batch_size": 32_768, "mesh.data": 1, "mesh.fsdp": -1},  # SigLIP's batch
}


def b16_config(platform: str) -> ml_collections.ConfigDict:
    """B/16 at 224 px, bfloat16 activations, for a platform of `B16_PLATFORMS` (`gpu`, `tpu`)."""
    c = base_config("B")
    c.model = models.get_default_model_config("B", patch_size=16, image_size=224)
    c.model.dtype = "bfloat16"
    c.model.remat_policy = "dots_with_no_batch_dims_saveable"
    c.total_steps = 100_000
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 5000
    c.optim.lr_mults.temperature = 1.0  # 100k steps at 1e-3: room to travel ~50 already
    c.data.num_workers = 16
    c.data.prefetch = 4
    c.data.max_shift = 8
    c.data.curated_dir = "/data/cclip/curated"  # set with --config.data.curated_dir=...
    c.data.curation = ml_collections.ConfigDict()
    c.distributed = True
    return variant(c, B16_PLATFORMS, platform, kind="platform")


def demo_config() -> ml_collections.ConfigDict:
    """The demo: tiny `mu/8` towers (depth 2) on the synthetic world, batch 64, 600 steps."""
    c = base_config("mu")
    c.model.image.variant = "mu/8"
    c.model.text.depth = 2
    c.model.image.depth = 2
    c.batch_size = 64
    # λ = 1 ("What λ means" above): under the per-triple normalisation the conditional
    # gradient at initialisation is a steady fraction of the plain one at every B and K
    # (docs/training.md), so the demo runs at the value the B/16 configs use.
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
    return c
