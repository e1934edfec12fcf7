"""CLIP's symmetric softmax (InfoNCE) loss, sharded by all-gather as in open_clip."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cclip_jax.losses import _engine as E


def softmax_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    *,
    scale: jax.Array | float,
    axis_name: E.AxisName = None,
    hard_text_emb: jax.Array | None = None,
    hard_valid: jax.Array | None = None,
) -> jax.Array:
    """CLIP loss: `(CE(image→text) + CE(text→image)) / 2`, each a mean over the global batch.

    `z_ij = scale·cos(x_i, t_j)`; image `i`'s target is caption `i` and caption `j`'s target is
    image `j`, each a softmax over the whole global batch (open_clip's `ClipLoss`).

    NegCLIP (Yuksekgonul et al., 2023, "When and why vision-language models behave like bags of
    words"), with `hard_text_emb`: the image→text softmax of every image runs over the `B`
    captions plus every valid hard negative `h_k` of the global batch (logits
    `scale·cos(x_i, h_k)`, all-gathered like the captions), so row `i`'s cross-entropy is
    `-z_ii + log(Σ_j e^{z_ij} + Σ_{k valid} e^{scale·cos(x_i, h_k)})`. The target is still
    caption `i`; text→image and both means over `B` are unchanged, and invalid rows' hard
    negatives are not in any softmax (with none valid the loss is the plain one exactly).

    Args:
      image_emb: `[B, D]` raw (unnormalised) image embeddings.
      text_emb: `[B, D]` raw caption embeddings; row `j` is the caption of image `j`.
      scale: scalar logit scale (a temperature, not its log).
      axis_name: mesh axis (or axes) when called inside `jax.shard_map` with both embeddings
        split along `B`. Every device then all-gathers the other devices' embeddings, so its
        memory grows with the global batch (`[b, B]` logits, `[B, D]` embeddings), as in
        open_clip; each device returns the global loss.
      hard_text_emb: optional `[B, D]` raw embeddings of the hard negatives (NegCLIP; row `j`:
        caption `j` with two attributes or objects swapped), split along `B` like `text_emb`.
        None: the plain CLIP loss. Doubles the image→text logits to `[b, 2B]`.
      hard_valid: optional bool or integer `[B]` (split like the rows): nonzero where row `j`
        has a hard negative. None with `hard_text_emb`: every row has one.

    Returns:
      The scalar loss, in float32 (or wider if the inputs are).

    Example:
      >>> x, t = jnp.eye(4), jnp.eye(4)
      >>> float(softmax_loss(x, t, scale=100.0)) < 1e-6
      True
    """
    x, t = E.check_pair(image_emb, text_emb, axis_name)
    (scale_,) = E.scalars(x.dtype, scale=scale).values()
    x = x * E.inv_norm(jnp.sum(x * x, axis=-1))[:, None]
    t = t * E.inv_norm(jnp.sum(t * t, axis=-1))[:, None]
    b = x.shape[0]
    gather = (
        (lambda a: a) if axis_name is None else (lambda a: lax.all_gather(a, axis_name, tiled=True))
    )
    all_x, all_t = gather(x), gather(t)
    own = jnp.arange(b) + E.block_offset(b, axis_name)  # global column of each row's partner
    rows = jnp.arange(b)
    i2t_logits = scale_ * x @ all_t.T  # [b, B]
    if hard_text_emb is not None:
        h, valid = check_hard(hard_text_emb, hard_valid, x)
        h = h * E.inv_norm(jnp.sum(h * h, axis=-1))[:, None]
        hard_logits = scale_ * x @ gather(h).T  # [b, B]
        if valid is not None:  # invalid hard negatives are in no softmax
            hard_logits = jnp.where(gather(valid)[None, :], hard_logits, -jnp.inf)
        i2t_logits = jnp.concatenate([i2t_logits, hard_logits], axis=-1)  # [b, 2B]
    elif hard_valid is not None:
        raise ValueError("hard_valid without hard_text_emb")
    i2t = jax.nn.log_softmax(i2t_logits, axis=-1)
    t2i = jax.nn.log_softmax(scale_ * t @ all_x.T, axis=-1)
    total = -(jnp.sum(i2t[rows, own]) + jnp.sum(t2i[rows, own])) / 2
    return E.global_mean(total, b, axis_name)


def check_hard(
    hard_text_emb: jax.Array, hard_valid: jax.Array | None, x: jax.Array
) -> tuple[jax.Array, jax.Array | None]:
    """Hard-negative embeddings in `x`'s dtype and a bool `[b]` validity (None: all valid)."""
    if hard_text_emb.shape != x.shape:
        raise ValueError(
            f"hard_text_emb must be [B, D] like image_emb {x.shape}, got {hard_text_emb.shape}"
        )
    b = x.shape[0]
    if hard_valid is None:
        return jnp.asarray(hard_text_emb, x.dtype), None
    if hard_valid.shape != (b,) or not (
        jnp.issubdtype(hard_valid.dtype, jnp.integer) or hard_valid.dtype == jnp.bool_
    ):
        raise ValueError(
            f"hard_valid must be bool or integer [B={b}], got {hard_valid.dtype} {hard_valid.shape}"
        )
    return jnp.asarray(hard_text_emb, x.dtype), hard_valid != 0
