"""Configs: files loaded as `--config` loads them, dotted-path overrides, named variants.

    from cclip_jax import config as config_lib
    c = config_lib.load("configs/demo.py:smoke")      # the file's get_config("smoke")
    config_lib.override(c, {"optim.lr": 1e-3})        # "a.b.c" -> value, in place
    config_lib.variant(c, {"gpu": {...}, "tpu": {...}}, "tpu")  # one named set of overrides

`cclip_jax.config.base` builds the training configs that `configs/*.py` share (it imports
`cclip_jax.models` for the model section); this package itself imports no JAX, so curation
reads its defaults without the training stack.
"""

from cclip_jax.config.files import load
from cclip_jax.config.overrides import override, variant

__all__ = ["load", "override", "variant"]
