"""SigLIP's pairwise sigmoid loss, tiled and ring-sharded (see the package docstring)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cclip_jax.losses import _engine as E
from cclip_jax.losses.softmax import check_hard


def sigmoid_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    *,
    scale: jax.Array | float,
    bias: jax.Array | float,
    pair_ids: jax.Array | None = None,
    axis_name: E.AxisName = None,
    hard_text_emb: jax.Array | None = None,
    hard_valid: jax.Array | None = None,
) -> jax.Array:
    """SigLIP loss: `Σ_ij softplus(-y_ij z_ij) / B`, `z_ij = scale·cos(x_i, t_j) + bias`.

    `y_ij = +1` if `i == j` (caption `j` belongs to image `j`) else `-1`; with `pair_ids`,
    `y_ij = +1` if `pair_ids[i] == pair_ids[j]` (multi-positives: e.g. rows with identical
    captions, whose "negatives" would be false ones).

    NegCLIP's hard negatives, with `hard_text_emb` (`h_j`: caption `j` with two attributes or
    objects swapped): each valid row adds one negative pair, its image against its own hard
    negative, and the loss becomes
    `(Σ_ij softplus(-y_ij z_ij) + Σ_{j valid} softplus(scale·cos(x_j, h_j) + bias)) / B`,
    i.e. the hard pairs are summed into the same total and divided by the same global `B`
    (not by the number of valid rows: a batch with fewer swappable captions weighs the term
    less). Local to each row, so sharded it only joins the existing `psum`.

    Args:
      image_emb: `[B, D]` raw (unnormalised) image embeddings.
      text_emb: `[B, D]` raw caption embeddings; row `j` is the caption of image `j`.
      scale: scalar logit scale (a temperature, not its log).
      bias: scalar logit bias.
      pair_ids: optional integer `[B]`, split along `B` like the embeddings: rows with equal
        ids are positives of each other. Ids must be unique across the global batch for rows
        that are not (e.g. the global index of a row's first duplicate). None: the diagonal.
      axis_name: mesh axis (or tuple of axes) when called inside `jax.shard_map` with both
        embeddings split along `B` and `scale`/`bias` replicated; every device then returns the
        global loss (global `B` in the denominator).
      hard_text_emb: optional `[B, D]` raw hard-negative embeddings, split along `B` like
        `text_emb`; row `j` is scored against image `j` only. None: the plain loss.
      hard_valid: optional bool or integer `[B]` (split like the rows): nonzero where row `j`
        has a hard negative; the others add nothing. None with `hard_text_emb`: all rows.

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
    if pair_ids is None:
        ids = jnp.arange(b, dtype=jnp.int32) + E.block_offset(b, axis_name)
    else:
        if pair_ids.shape != (b,) or not jnp.issubdtype(pair_ids.dtype, jnp.integer):
            raise ValueError(
                f"pair_ids must be integer [B={b}], got {pair_ids.dtype} {pair_ids.shape}"
            )
        ids = jnp.asarray(pair_ids, jnp.int32)
    local = {
        "x": x * E.inv_norm(jnp.sum(x * x, axis=-1))[:, None],
        "ids": ids,
        **E.scalars(dtype, scale=scale, bias=bias),
    }
    block = {"t": t, "ids": ids}
    tile_rows = E.divisor_at_most(b, E.TILE_ELEMENTS // b)
    total = E.ring_sum(_sigmoid_tile, tile_rows, axis_name, dtype, local, block)
    if hard_text_emb is not None:
        h, valid = check_hard(hard_text_emb, hard_valid, x)
        h = h * E.inv_norm(jnp.sum(h * h, axis=-1))[:, None]
        z = local["scale"] * jnp.sum(local["x"] * h, axis=-1) + local["bias"]  # [b]
        hard = E.softplus(z)
        total = total + jnp.sum(hard if valid is None else jnp.where(valid, hard, 0))
    elif hard_valid is not None:
        raise ValueError("hard_valid without hard_text_emb")
    return E.global_mean(total, b, axis_name)


def _sigmoid_tile(local: dict, tile: dict) -> jax.Array:
    t = tile["t"] * E.inv_norm(jnp.sum(tile["t"] * tile["t"], axis=-1))[:, None]
    z = local["scale"] * (local["x"] @ t.T) + local["bias"]  # [b, c]
    positive = local["ids"][:, None] == tile["ids"][None, :]
    return jnp.sum(E.softplus(jnp.where(positive, -z, z)))


def pair_ids_from_tokens(tokens: jax.Array) -> jax.Array:
    """`pair_ids` that make identical captions positives of each other's images.

    Args:
      tokens: integer `[B, L]` caption token ids of the global batch.

    Returns:
      int32 `[B]`: for row `j`, the smallest `i` with `tokens[i] == tokens[j]` (all of `L`).
      One stable sort of the rows (`O(B log B · L)`), no `[B, B]` comparison.

    Example:
      >>> pair_ids_from_tokens(jnp.array([[5, 2], [7, 1], [5, 2]])).tolist()
      [0, 1, 0]
    """
    b, length = tokens.shape
    index = jnp.arange(b, dtype=jnp.int32)
    keys = [tokens[:, col] for col in range(length)]
    *sorted_keys, order = jax.lax.sort([*keys, index], num_keys=length, is_stable=True)
    sorted_keys = jnp.stack(sorted_keys, axis=1)
    starts = jnp.concatenate(
        [jnp.ones((1,), bool), jnp.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)]
    )
    # The sorted position where each row's run of equal rows starts (positions only grow, so
    # a running max carries it forward); the stable sort put the run's smallest index there.
    run_start = jax.lax.cummax(jnp.where(starts, index, 0), axis=0)
    return jnp.zeros((b,), jnp.int32).at[order].set(order[run_start])
