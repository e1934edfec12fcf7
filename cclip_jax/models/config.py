"""The model config layout (`config.model`), its defaults, and its validation.

Layout (an `ml_collections.ConfigDict`; a plain nested dict works too)::

    model.image.variant       'B/16'    size name + patch size (see sizes.SIZES)
    model.image.image_size    224       input side in pixels; inputs must be [B, S, S, channels]
    model.image.channels      3
    model.image.pool_type     'map'     'map' (SigLIP) | 'gap' | 'tok'
    model.image.posemb        'learn'   'learn' | 'sincos2d'
    model.image.proj          True      Dense to embed_dim (False: pooled width is the embedding,
                                        as in SigLIP; needs width == embed_dim)
    model.text.variant        'B'
    model.text.vocab_size     32000
    model.text.max_len        64        longest token sequence (captions and concepts)
    model.text.pool_type      'last'    'last' (SigLIP) | 'first' | 'map' | 'gap'
    model.text.pad_id         0
    model.text.mask_padding   True      False reproduces big_vision's unmasked text tower
    model.text.sticky_eos     False     tokenize with big_vision's sticky EOS (SigLIP): EOS
                                        appended, and last when a text is cut
    model.text.lowercase      False     lower-case texts before tokenizing (SigLIP's tokenizers
                                        were trained on lower-cased text; `<M>` keeps its case)
    model.text.proj           True
    model.embed_dim           768       shared embedding width D
    model.dtype               'float32' activation/matmul dtype ('bfloat16' on accelerators);
                                        parameters are always float32
    model.remat_policy        'none'    see layers.REMAT_POLICIES
    model.scan_layers         False     nn.scan over blocks (compile time flat in depth)
    model.gate                'identity' concept gate: 'identity' | 'softplus' | 'sigmoid' |
                                        'ones' (every gate 1: the conditional term without
                                        gating, an experiment control)
    model.temperature_init    10.0      initial exp(t) of the plain term (SigLIP: 10)
    model.bias_init           None      initial bias of the plain term; None: the trainer
                                        starts it at logit(1/B) (SigLIP's -10 is that at
                                        B = 32k); a model built outside the trainer: -10
    model.cond_temperature_init 10.0    initial exp(cond_t) of the conditional term
    model.cond_bias_init      None      None: the trainer starts it at the logit of the data's
                                        weighted positive-triple rate (manifest); else -10
    model.pool_conditional    False     the pool arm: the image MAP head also pools each image
                                        per concept, query probe + W_q·c_k (W_q zero-init),
                                        output image_cond_emb [B, K, D]; needs image
                                        pool_type 'map'

Optional per-tower overrides of the variant: `width`, `depth`, `mlp_dim`, `num_heads`,
`patch_size` (image).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from cclip_jax.models import layers, sizes, text, vit

# `model.gate` -> the gate applied to the concept embeddings `[K, D]` (the choices of the field).
GATES = {
    "identity": lambda c: c,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    # Control: cos(x ⊙ 1, t ⊙ 1) = cos(x, t), the concept labels without gating (the concept
    # tower output is unused, so XLA drops its computation).
    "ones": jnp.ones_like,
}
# SigLIP's initial exp(t) and b, of both terms: `TwoTower`'s defaults, and the config's for
# the scales (the trainer starts the biases from the data unless the config sets them).
TEMPERATURE_INIT = 10.0
BIAS_INIT = -10.0
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_TINY = ("mu", "Ti")


def get_default_model_config(
    size: str = "mu", *, patch_size: int | None = None, image_size: int | None = None
) -> ml_collections.ConfigDict:
    """A complete `config.model` for `size` (`'mu'`, `'Ti'`, ..., `'So400m'`).

    Tiny sizes (`mu`, `Ti`) default to 32 px images with 8 px patches, a 1024-token vocabulary
    and 16-token texts so they train in minutes on a CPU; the others default to SigLIP's
    224 px, patch 16, 32k vocabulary, 64 tokens. `embed_dim` is the tower width.
    """
    size_info = sizes.decode_variant(size)  # raises with the known names
    tiny = size in _TINY
    patch = patch_size or size_info.patch_size or (8 if tiny else 16)
    cfg = ml_collections.ConfigDict()
    cfg.image = ml_collections.ConfigDict(
        dict(
            variant=f"{size.split('/')[0]}/{patch}",
            image_size=image_size or (32 if tiny else 224),
            channels=3,
            pool_type="map",
            posemb="learn",
            proj=True,
        )
    )
    cfg.text = ml_collections.ConfigDict(
        dict(
            variant=size.split("/")[0],
            vocab_size=1024 if tiny else 32_000,
            max_len=16 if tiny else 64,
            pool_type="last",
            pad_id=0,
            mask_padding=True,
            sticky_eos=False,
            lowercase=False,
            proj=True,
        )
    )
    cfg.embed_dim = size_info.width
    cfg.dtype = "float32"
    cfg.remat_policy = "none"
    cfg.scan_layers = False
    cfg.gate = "identity"
    cfg.temperature_init = TEMPERATURE_INIT
    # None = from the batch (the trainer); typed so that --config.model.bias_init=-10 works.
    cfg.bias_init = ml_collections.FieldReference(None, field_type=float)
    cfg.cond_temperature_init = TEMPERATURE_INIT
    cfg.cond_bias_init = ml_collections.FieldReference(None, field_type=float)
    cfg.pool_conditional = False
    return cfg


def pool_conditional(config: Mapping[str, Any]) -> bool:
    """`config.model.pool_conditional`, checked against the image pool type."""
    pool = bool(config.get("pool_conditional", False))
    if pool and config["image"].get("pool_type", "map") != "map":
        raise ValueError(
            "config.model.pool_conditional=True needs config.model.image.pool_type="
            f"'map', got {config['image'].get('pool_type')!r}"
        )
    return pool


def _choice(value: Any, choices: Any, field: str) -> Any:
    if value not in choices:
        raise ValueError(f"config.model.{field}={value!r} is not one of {tuple(choices)}")
    return value


def _tower_dims(tower: Mapping[str, Any], field: str) -> dict[str, int | None]:
    try:
        size = sizes.decode_variant(tower["variant"])
    except ValueError as e:
        raise ValueError(f"config.model.{field}.variant: {e}") from None
    dims = dict(
        width=size.width,
        depth=size.depth,
        mlp_dim=size.mlp_dim,
        num_heads=size.num_heads,
        patch_size=size.patch_size,
    )
    for key in dims:
        if tower.get(key) is not None:
            dims[key] = int(tower[key])
    return dims


def tower_kwargs(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resolves `config.model` into keyword arguments of `ImageEncoder` and `TextEncoder`.

    Raises:
      ValueError: naming the offending field, for unknown sizes, pool types, dtypes, gates or
        remat policies, and for `proj=False` with a width different from `embed_dim`.
    """
    img, txt = config["image"], config["text"]
    embed_dim = int(config["embed_dim"])
    dtype = DTYPES[_choice(config.get("dtype", "float32"), DTYPES, "dtype")]
    remat = _choice(config.get("remat_policy", "none"), layers.REMAT_POLICIES, "remat_policy")
    scan = bool(config.get("scan_layers", False))
    _choice(config.get("gate", "identity"), GATES, "gate")
    common = dict(dtype=dtype, scan=scan, remat_policy=remat)

    img_dims = _tower_dims(img, "image")
    if img_dims["patch_size"] is None:
        raise ValueError("config.model.image.variant needs a patch size, e.g. 'B/16'")
    txt_dims = _tower_dims(txt, "text")
    del txt_dims["patch_size"]
    outs = {}
    for name, tower, dims in (("image", img, img_dims), ("text", txt, txt_dims)):
        if tower.get("proj", True):
            outs[name] = embed_dim
        elif dims["width"] != embed_dim:
            raise ValueError(
                f"config.model.{name}.proj=False needs the tower width ({dims['width']}) to equal "
                f"config.model.embed_dim ({embed_dim})"
            )
        else:
            outs[name] = None
    image_kw = dict(
        **img_dims,
        image_size=int(img.get("image_size", 224)),
        channels=int(img.get("channels", 3)),
        pool_type=_choice(img.get("pool_type", "map"), vit.POOL_TYPES, "image.pool_type"),
        posemb=_choice(img.get("posemb", "learn"), vit.POSEMB_TYPES, "image.posemb"),
        out_dim=outs["image"],
        **common,
    )
    text_kw = dict(
        **txt_dims,
        vocab_size=int(txt.get("vocab_size", 32_000)),
        max_len=int(txt.get("max_len", 64)),
        pool_type=_choice(txt.get("pool_type", "last"), text.POOL_TYPES, "text.pool_type"),
        pad_id=int(txt.get("pad_id", 0)),
        mask_padding=bool(txt.get("mask_padding", True)),
        out_dim=outs["text"],
        **common,
    )
    if image_kw["image_size"] < image_kw["patch_size"]:
        raise ValueError(
            f"config.model.image.image_size={image_kw['image_size']} is smaller than the "
            f"patch size {image_kw['patch_size']}"
        )
    return image_kw, text_kw
