"""The CCLIP two-tower model: image tower, text tower (captions and concepts), temperatures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cclip_jax.models import config as model_config
from cclip_jax.models import layers
from cclip_jax.models.text import TextEncoder
from cclip_jax.models.vit import ImageEncoder

Array = jax.Array


@flax.struct.dataclass
class TwoTowerOutput:
    """What `TwoTower.apply` returns. Embeddings are float32 and NOT normalised.

    Attributes:
      image_emb: `[B, D]`, or None when no images were given.
      text_emb: `[B, D]` caption embeddings, or None.
      concept_emb: `[K, D]` concept embeddings after the gate, or None.
      scale, bias: scalars of the plain SigLIP term (`scale = exp(t)`).
      cond_scale, cond_bias: scalars of the conditional term.
      image_cond_emb: `[B, K, D]` concept-pooled image embeddings `x_{i|k}` (the pool arm:
        `pool_conditional=True` with images and concepts given), else None.
    """

    image_emb: Array | None
    text_emb: Array | None
    concept_emb: Array | None
    scale: Array
    bias: Array
    cond_scale: Array
    cond_bias: Array
    image_cond_emb: Array | None = None

    def __getitem__(self, key: str) -> Array | None:
        return getattr(self, key)


def _constant(value: float):
    return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


class TwoTower(nn.Module):
    """Image and text towers with learnable temperatures (build it with `build_model`).

    `image` and `text` are keyword arguments of `ImageEncoder` and `TextEncoder` (the
    resolved config); the towers are named `img` and `txt` as in big_vision.
    Parameters `t`, `b` (plain term) and `cond_t`, `cond_b` (conditional term) are scalars in
    the log-scale parametrisation: the loss uses `exp(t)` and `b`.
    `pool_conditional`: with images and concepts, the image tower's MAP head also pools each
    image once per concept (query `probe + W_q·ĉ_k` from the raw, ungated concept embedding;
    `ImageEncoder`), returned as `image_cond_emb`.
    """

    image: Mapping[str, Any]
    text: Mapping[str, Any]
    gate: str = "identity"
    temperature_init: float = model_config.TEMPERATURE_INIT
    bias_init: float = model_config.BIAS_INIT
    cond_temperature_init: float = model_config.TEMPERATURE_INIT
    cond_bias_init: float = model_config.BIAS_INIT
    pool_conditional: bool = False

    def _temperature(self, name: str, init: float) -> Array:
        return self.param(name, layers.logical(_constant(init), ()), ())

    @nn.compact
    def __call__(
        self,
        images: Array | None = None,
        texts: Array | None = None,
        concepts: Array | None = None,
        *,
        text_groups: int = 1,
    ) -> TwoTowerOutput:
        """Embeds whatever is given.

        Args:
          images: `[B, S, S, C]` float.
          texts: `[B, L]` int caption token ids (right-padded), `L <= max_len`.
          concepts: `[K, Lc]` int concept token ids (n-grams or masked captions), `Lc <= max_len`.
          text_groups: captions and concepts of the same length go through the text tower in
            one call (`encode_together`); pass the number of devices their rows are split over
            so that every device keeps its own rows.
        """
        if self.gate not in model_config.GATES:
            raise ValueError(f"Unknown gate {self.gate!r}; known: {tuple(model_config.GATES)}")
        image_emb = text_emb = concept_emb = image_cond_emb = None
        pool = self.pool_conditional and images is not None and concepts is not None
        if texts is not None or concepts is not None:
            txt = TextEncoder(**self.text, name="txt")
            # Gate "ones" ignores the concept embeddings: encoded apart, XLA drops them.
            together = (
                texts is not None
                and concepts is not None
                and (self.gate != "ones" or pool)
                and texts.shape[1] == concepts.shape[1]
            )
            if together:
                text_emb, concept_emb = encode_together(txt, texts, concepts, text_groups)
            else:
                text_emb = None if texts is None else txt(texts)
                concept_emb = None if concepts is None else txt(concepts)
            if text_emb is not None:
                text_emb = text_emb.astype(jnp.float32)
        if images is not None:
            img = ImageEncoder(**self.image, name="img")
            if pool:  # the raw (ungated) concept embeddings make the queries
                image_emb, image_cond_emb = img(images, concept_emb.astype(jnp.float32))
                image_cond_emb = image_cond_emb.astype(jnp.float32)
            else:
                image_emb = img(images)
            image_emb = image_emb.astype(jnp.float32)
        if concept_emb is not None:
            concept_emb = model_config.GATES[self.gate](concept_emb.astype(jnp.float32))
        t = self._temperature("t", float(np.log(self.temperature_init)))
        b = self._temperature("b", self.bias_init)
        cond_t = self._temperature("cond_t", float(np.log(self.cond_temperature_init)))
        cond_b = self._temperature("cond_b", self.cond_bias_init)
        return TwoTowerOutput(
            image_emb=image_emb,
            text_emb=text_emb,
            concept_emb=concept_emb,
            scale=jnp.exp(t),
            bias=b,
            cond_scale=jnp.exp(cond_t),
            cond_bias=cond_b,
            image_cond_emb=image_cond_emb,
        )

    def dummy_inputs(self, batch: int = 1) -> dict[str, Array]:
        """Zero inputs for `init`: images, texts and concepts, each `[batch, ...]`."""
        s, c = self.image["image_size"], self.image["channels"]
        length = self.text["max_len"]
        return dict(
            images=jnp.zeros((batch, s, s, c), jnp.float32),
            texts=jnp.zeros((batch, length), jnp.int32),
            concepts=jnp.zeros((batch, length), jnp.int32),
        )

    def init_params(self, rng: Array) -> Any:
        """Initialises all variables (boxed with their logical axis names); `{'params': ...}`."""
        return self.init(rng, **self.dummy_inputs())

    def abstract_params(self) -> Any:
        """Shapes and logical names of all variables without allocating them (`eval_shape`)."""
        return jax.eval_shape(self.init_params, jax.random.key(0))


def encode_together(
    encoder: nn.Module, texts: Array, concepts: Array, groups: int = 1
) -> tuple[Array, Array]:
    """Captions `[B, L]` and concepts `[K, L]` through one encoder call -> `[B, D]`, `[K, D]`.

    One call of a B + K batch instead of a B and a K call: on the demo (B = 64, K = 16) the
    second call's fixed per-layer cost, not its rows, made most of CCLIP's step-time overhead
    over SigLIP (benchmarks/train_bench.py). Rows are independent in the encoder, so the
    embeddings are those of two calls. The rows are stacked per group (group `g`: caption rows
    `g·B/G...`, then concept rows `g·K/G...`): with both inputs split over `G` devices along
    their first axis, every device's rows stay on it and no resharding is needed.
    """
    b, k = texts.shape[0], concepts.shape[0]
    if b % groups or k % groups:
        raise ValueError(
            f"text_groups={groups} must divide the caption rows B={b} and the concept rows K={k}"
        )
    length = texts.shape[1]
    both = jnp.concatenate(
        [texts.reshape(groups, b // groups, length), concepts.reshape(groups, k // groups, length)],
        axis=1,
    )
    out = encoder(both.reshape(b + k, length))
    out = out.reshape(groups, (b + k) // groups, -1)
    return (out[:, : b // groups].reshape(b, -1), out[:, b // groups :].reshape(k, -1))


def build_model(config: Mapping[str, Any] | None = None, **overrides: Any) -> TwoTower:
    """Builds a `TwoTower` from `config.model` (see `cclip_jax.models.config` for the layout).

    `overrides` replace top-level fields, e.g. `build_model(cfg, dtype='bfloat16')`.
    With no config, the `mu` default is used.
    """
    cfg = dict(config if config is not None else model_config.get_default_model_config())
    cfg.update(overrides)
    image_kw, text_kw = model_config.tower_kwargs(cfg)
    # Fields left out or None (the trainer fills the biases from the batch) keep TwoTower's
    # defaults (model_config.TEMPERATURE_INIT, BIAS_INIT: SigLIP's).
    scalars = {name: float(cfg[name]) for name in _SCALAR_INITS if cfg.get(name) is not None}
    return TwoTower(
        image=image_kw,
        text=text_kw,
        gate=cfg.get("gate", "identity"),
        pool_conditional=model_config.pool_conditional(cfg),
        **scalars,
    )


_SCALAR_INITS = ("temperature_init", "bias_init", "cond_temperature_init", "cond_bias_init")
