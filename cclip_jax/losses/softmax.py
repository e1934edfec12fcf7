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
) -> jax.Array:
    """CLIP loss: `(CE(image→text) + CE(text→image)) / 2`, each a mean over the global batch.

    `z_ij = scale·cos(x_i, t_j)`; image `i`'s target is caption `i` and caption `j`'s target is
    image `j`, each a softmax over the whole global batch (open_clip's `ClipLoss`).

    Args:
      image_emb: `[B, D]` raw (unnormalised) image embeddings.
      text_emb: `[B, D]` raw caption embeddings; row `j` is the caption of image `j`.
      scale: scalar logit scale (a temperature, not its log).
      axis_name: mesh axis (or axes) when called inside `jax.shard_map` with both embeddings
        split along `B`. Every device then all-gathers the other devices' embeddings, so its
        memory grows with the global batch (`[b, B]` logits, `[B, D]` embeddings), as in
        open_clip; each device returns the global loss.

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
    if axis_name is None:
        all_x, all_t = x, t
    else:
        all_x = lax.all_gather(x, axis_name, tiled=True)
        all_t = lax.all_gather(t, axis_name, tiled=True)
    own = jnp.arange(b) + E.block_offset(b, axis_name)  # global column of each row's partner
    rows = jnp.arange(b)
    i2t = jax.nn.log_softmax(scale_ * x @ all_t.T, axis=-1)  # [b, B]
    t2i = jax.nn.log_softmax(scale_ * t @ all_x.T, axis=-1)
    total = -(jnp.sum(i2t[rows, own]) + jnp.sum(t2i[rows, own])) / 2
    return E.global_mean(total, b, axis_name)
