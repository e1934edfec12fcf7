"""SigLIP's pairwise sigmoid loss, tiled and ring-sharded (see the package docstring)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cclip_jax.losses import _engine as E


def sigmoid_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    *,
    scale: jax.Array | float,
    bias: jax.Array | float,
    axis_name: E.AxisName = None,
) -> jax.Array:
    """SigLIP loss: `Σ_ij softplus(-y_ij z_ij) / B`, `z_ij = scale·cos(x_i, t_j) + bias`.

    `y_ij = +1` if `i == j` (caption `j` belongs to image `j`) else `-1`.

    Args:
      image_emb: `[B, D]` raw (unnormalised) image embeddings.
      text_emb: `[B, D]` raw caption embeddings; row `j` is the caption of image `j`.
      scale: scalar logit scale (a temperature, not its log).
      bias: scalar logit bias.
      axis_name: mesh axis (or tuple of axes) when called inside `jax.shard_map` with both
        embeddings split along `B` and `scale`/`bias` replicated; every device then returns the
        global loss (global `B` in the denominator).

    Returns:
      The scalar loss, in float32 (or wider if the inputs are).

    Example:
      >>> x, t = jnp.ones((4, 8)), jnp.ones((4, 8))
      >>> sigmoid_loss(x, t, scale=10.0, bias=-10.0).shape
      ()
    """
    x, t = E.check_pair(image_emb, text_emb, axis_name)
    dtype = x.dtype
    b = x.shape[0]
    ids = jnp.arange(b, dtype=jnp.int32) + E.block_offset(b, axis_name)
    local = {
        "x": x * E.inv_norm(jnp.sum(x * x, axis=-1))[:, None],
        "ids": ids,
        **E.scalars(dtype, scale=scale, bias=bias),
    }
    block = {"t": t, "ids": ids}
    tile_rows = E.divisor_at_most(b, E.TILE_ELEMENTS // b)
    total = E.ring_sum(_sigmoid_tile, tile_rows, axis_name, dtype, local, block)
    return E.global_mean(total, b, axis_name)


def _sigmoid_tile(local: dict, tile: dict) -> jax.Array:
    t = tile["t"] * E.inv_norm(jnp.sum(tile["t"] * tile["t"], axis=-1))[:, None]
    z = local["scale"] * (local["x"] @ t.T) + local["bias"]  # [b, c]
    positive = local["ids"][:, None] == tile["ids"][None, :]
    return jnp.sum(E.softplus(jnp.where(positive, -z, z)))
