"""CCLIP's Flax towers: a ViT image tower, a text tower, and the two-tower model.

    from cclip_jax import models
    cfg = models.get_default_model_config("mu")        # or "B" with cfg.image.variant = "B/16"
    model = models.build_model(cfg)
    variables = model.init_params(jax.random.key(0))   # {'params': ...}, logically boxed
    out = model.apply(variables, images=x, texts=t, concepts=c)
    out.image_emb [B, D], out.text_emb [B, D], out.concept_emb [K, D], out.scale, out.bias, ...

`load_siglip_npz` loads a big_vision SigLIP checkpoint into these parameters.
"""

from cclip_jax.models.config import get_default_model_config, tower_kwargs
from cclip_jax.models.siglip_npz import (
    LoadReport,
    load_siglip_npz,
    save_siglip_npz,
    siglip_config,
)
from cclip_jax.models.sizes import SIZES, TowerSize, decode_variant
from cclip_jax.models.text import TextEncoder
from cclip_jax.models.two_towers import TwoTower, TwoTowerOutput, build_model
from cclip_jax.models.vit import ImageEncoder

__all__ = [
    "SIZES",
    "ImageEncoder",
    "LoadReport",
    "TextEncoder",
    "TowerSize",
    "TwoTower",
    "TwoTowerOutput",
    "build_model",
    "decode_variant",
    "get_default_model_config",
    "load_siglip_npz",
    "save_siglip_npz",
    "siglip_config",
    "tower_kwargs",
]
