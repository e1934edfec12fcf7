"""CCLIP's conditional sigmoid loss: dense and support-bounded (`max_present`) paths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cclip_jax.losses import _engine as E
from cclip_jax.losses._sparse import _own_positives_sparse, _sparse_sum
from cclip_jax.losses._weights import SCALARS, _conditional_terms, _pair_weights, check_concepts

NORMALIZE = ("triples", "batch")
"""The choices of `normalize`: a weighted mean over counted triples, or a sum per row."""


def conditional_sigmoid_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    concept_emb: jax.Array,
    concept_labels: jax.Array,
    *,
    scale: jax.Array | float,
    bias: jax.Array | float,
    unknown_weight: jax.Array | float = 1.0,
    cross_positive_weight: jax.Array | float = 1.0,
    normalize: str = "triples",
    max_present: int | None = None,
    axis_name: E.AxisName = None,
) -> jax.Array:
    """CCLIP loss over the image × caption × concept tensor of gated logits.

    `z_ijk = scale·cos(x_i ⊙ g_k, t_j ⊙ g_k) + bias` with the gate `g_k = c_k`. With
    `a = L[i, k]` and `b = L[j, k]`: `(+1, +1)` is a positive of weight 1; `(+1, -1)` and
    `(-1, +1)` are negatives of weight 1; `(+1, 0)` and `(0, +1)` are negatives of weight
    `unknown_weight`; every other triple (and any label outside {-1, 0, +1}) is ignored. A
    `(+1, +1)` triple with `i ≠ j` (a cross-image positive) weighs `cross_positive_weight`
    instead of 1; `i = j` keeps weight 1.

    `normalize="triples"`: the loss is `Σ_ijk w_ijk softplus(-y_ijk z_ijk) / Σ_ijk w_ijk`, the
    weighted mean over the counted triples of the global batch (0, with zero gradients, when
    no triple counts). Its size does not grow with B, K or the labels' density, so a weight λ
    on it means the same at every batch size. `normalize="batch"`: `Σ_ijk w·softplus / B`, the
    SigLIP-style sum per row.

    Args:
      image_emb: `[B, D]` raw image embeddings.
      text_emb: `[B, D]` raw caption embeddings; caption `j` belongs to image `j`.
      concept_emb: `[K, D]` concept embeddings (replicated when sharded). A zero row (padding)
        contributes nothing if its label column holds no `+1`.
      concept_labels: integer `[B, K]`: `+1` row `b` (image `b` through its caption) has concept
        `k`, `-1` known not to have it, `0` unknown.
      scale: scalar logit scale.
      bias: scalar logit bias.
      unknown_weight: weight of the `(+1, 0)` / `(0, +1)` negatives.
      cross_positive_weight: `β`, the weight of `(+1, +1)` triples with `i ≠ j`. `β = 0` keeps
        only the same-image conditional positives. A Python `1.0` (the default) costs nothing.
      normalize: `"triples"` (weighted mean over counted triples) or `"batch"` (sum / B).
      max_present: static bound `R` on the `+1` entries of a row. Work and memory then scale
        with `B·R·B·D` instead of `B·B·K·D`. A row with more than `R` present concepts makes
        the loss (and its gradients) NaN: loud, never silently wrong.
      axis_name: as in `sigmoid_loss`; `concept_labels` is split along `B` like the embeddings.

    Returns:
      The scalar loss. With every `c_k = 1`, `L = I` (`K = B`), `unknown_weight = 0.5` and
      `normalize="batch"` it equals `sigmoid_loss` exactly.

    Example:
      >>> x, t, c = jnp.ones((4, 8)), jnp.ones((4, 8)), jnp.ones((3, 8))
      >>> labels = jnp.zeros((4, 3), jnp.int8).at[0, 1].set(1)
      >>> conditional_sigmoid_loss(x, t, c, labels, scale=10.0, bias=-10.0).shape
      ()
    """
    x, t = E.check_pair(image_emb, text_emb, axis_name)
    b, d = x.shape
    check_concepts(concept_emb, concept_labels, b, d)
    if max_present is not None and (not isinstance(max_present, int) or max_present < 1):
        raise ValueError(f"max_present must be a positive int or None, got {max_present!r}")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize={normalize!r} is not one of {NORMALIZE}")
    dtype = x.dtype
    # The gate is g = c (identity, as the proposal writes it); the algebra needs only g².
    g2 = jnp.square(jnp.asarray(concept_emb).astype(dtype))
    labels = jnp.asarray(concept_labels).astype(jnp.int8)
    consts = E.scalars(dtype, scale=scale, bias=bias, uw=unknown_weight, beta=cross_positive_weight)
    # Every (+1, +1) triple is summed at weight β by the tiles; the B·R same-image ones (i = j)
    # are then topped up by (1 - β) here, locally: the ring never needs to know whether a
    # visiting caption is the row's own.
    exact_beta = isinstance(cross_positive_weight, int | float) and cross_positive_weight == 1
    if max_present is None:
        total = _dense_sum(x, t, g2, labels, consts, axis_name)
        if not exact_beta:
            total += (1 - consts["beta"]) * _own_positives_dense(x, t, g2, labels, consts)
        overflow = None
    else:
        total, overflow, slots = _sparse_sum(x, t, g2, labels, consts, max_present, axis_name)
        if not exact_beta:
            total += (1 - consts["beta"]) * _own_positives_sparse(x, t, g2, slots, consts)
        if axis_name is not None:
            overflow = lax.pmax(overflow.astype(jnp.int32), axis_name) > 0
    if normalize == "batch":
        loss = E.global_mean(total, b, axis_name)
    else:
        loss = _triple_mean(total, labels, consts, axis_name)
    if overflow is None:
        return loss
    # Multiplying (not `where`) makes the gradients NaN too, so a training step cannot
    # quietly apply a wrong update.
    return loss * jnp.where(overflow, jnp.nan, 1.0).astype(dtype)


def triple_weight_sum(
    labels: jax.Array,
    *,
    unknown_weight=1.0,
    cross_positive_weight=1.0,
    axis_name: E.AxisName = None,
    dtype=jnp.float32,
) -> jax.Array:
    """`Σ_ijk w_ijk`: the summed weight of the counted triples of the global batch.

    From the labels alone: with `P_k, N_k, U_k` the counts of `+1, -1, 0` in column `k`,
    `Σ_k β·P_k² + (1 - β)·P_k + 2·P_k·N_k + 2·uw·P_k·U_k`. `labels [B, K]` (this device's rows
    under `axis_name`; the counts are then summed over the mesh axis).
    """
    b, k = labels.shape
    # Column sums over chunks of rows: a single sum over axis 0 would materialise `[B, K]`
    # converted copies (192 MiB at B = K = 4096 on CPU).
    rows = E.divisor_at_most(b, max(1, E.TILE_ELEMENTS // (4 * k)))
    count = lambda chunk: jnp.stack(
        [jnp.sum(chunk == v, axis=0, dtype=jnp.int32) for v in (1, -1, 0)]
    )
    counts = jnp.sum(lax.map(count, labels.reshape(b // rows, rows, k)), axis=0).astype(dtype)
    if axis_name is not None:
        counts = lax.psum(counts, axis_name)
    p, n, u = counts
    beta = jnp.asarray(cross_positive_weight, dtype)
    uw = jnp.asarray(unknown_weight, dtype)
    return jnp.sum(beta * p * p + (1 - beta) * p + 2 * p * n + 2 * uw * p * u)


def _triple_mean(total, labels, consts, axis_name) -> jax.Array:
    weight = triple_weight_sum(
        labels,
        unknown_weight=consts["uw"],
        cross_positive_weight=consts["beta"],
        axis_name=axis_name,
        dtype=total.dtype,
    )
    if axis_name is not None:
        total = lax.psum(total, axis_name)
    # No counted triple: the sum is exactly 0 (every weight is 0), and so is its gradient.
    return total / jnp.where(weight > 0, weight, 1)


def _own_positives_dense(x, t, g2, labels, consts) -> jax.Array:
    """`Σ_{i,k: L[i,k] = +1} softplus(-z_iik)`: each row's image against its own caption."""
    num = (x * t) @ g2.T  # [b, K]
    inv = E.inv_norm((x * x) @ g2.T) * E.inv_norm((t * t) @ g2.T)
    z = consts["scale"] * num * inv + consts["bias"]
    return jnp.sum(jnp.where(labels == 1, E.softplus(-z), 0.0))


def _dense_tile(local: dict, tile: dict) -> jax.Array:
    """All local images × a caption tile × every concept, one chunk of concepts at a time."""
    n_chunks, kc, _ = local["g2"].shape
    lab_t = tile["lab"].reshape(-1, n_chunks, kc).transpose(1, 0, 2)  # [n, c, kc]
    shared = {name: local[name] for name in ("x", *SCALARS)} | {"t": tile["t"]}
    chunks = (local["g2"], local["lab"], lab_t)
    return E.scan_sum(_dense_chunk, shared["x"].dtype, shared, chunks)


def _dense_chunk(shared: dict, chunk: tuple) -> jax.Array:
    x, t = shared["x"], shared["t"]  # [bi, D], [c, D]
    g2, a, b = chunk  # [kc, D], labels [bi, kc] and [c, kc]
    inv_x = E.inv_norm((x * x) @ g2.T).T  # [kc, bi]
    inv_t = E.inv_norm((t * t) @ g2.T).T  # [kc, c]
    num = (x[None, :, :] * g2[:, None, :]) @ t.T  # [kc, bi, c]: one matmul per concept
    z = shared["scale"] * num * inv_x[:, :, None] * inv_t[:, None, :] + shared["bias"]
    w_pos, w_neg = _pair_weights(a.T[:, :, None], b.T[:, None, :], shared["uw"], shared["beta"])
    return _conditional_terms(z, w_pos, w_neg)


def _dense_sum(x, t, g2, labels, consts, axis_name) -> jax.Array:
    b, d = x.shape
    k = g2.shape[0]
    tile_rows = E.divisor_at_most(b, E.TILE_ELEMENTS // b)
    kc = max(1, min(k, E.TILE_ELEMENTS // (b * tile_rows)))
    pad = -k % kc  # zero gates with label 0 have zero weight everywhere
    g2 = jnp.pad(g2, ((0, pad), (0, 0)))
    labels = jnp.pad(labels, ((0, 0), (0, pad)))
    n_chunks = (k + pad) // kc
    local = {
        "x": x,
        "g2": g2.reshape(n_chunks, kc, d),
        "lab": labels.reshape(b, n_chunks, kc).transpose(1, 0, 2),
        **consts,
    }
    block = {"t": t, "lab": labels}
    return E.ring_sum(_dense_tile, tile_rows, axis_name, x.dtype, local, block)
