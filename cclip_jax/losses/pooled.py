"""The pool arm's conditional loss: per-(image, concept) embeddings `x_{i|k}` against captions.

The image tower pools each image once per concept (`MAPHead` with query `probe + W·c_k`, see
`models.vit.ImageEncoder`), so the concept conditions the image *before* pooling; the logit then
compares that embedding with the plain caption embedding, ungated:
`z_ijk = scale·cos(x_{i|k}, t_j) + bias`. The labels, weights and normalisations are exactly
those of `conditional_sigmoid_loss` (its helpers are reused), so the two arms differ only in
where the concept enters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cclip_jax.losses import _engine as E
from cclip_jax.losses.conditional import (
    NORMALIZE,
    SCALARS,
    _conditional_terms,
    _pair_weights,
    _triple_mean,
)


def pooled_conditional_sigmoid_loss(
    image_cond_emb: jax.Array,
    text_emb: jax.Array,
    concept_labels: jax.Array,
    *,
    scale: jax.Array | float,
    bias: jax.Array | float,
    unknown_weight: jax.Array | float = 1.0,
    cross_positive_weight: jax.Array | float = 1.0,
    normalize: str = "triples",
    axis_name: E.AxisName = None,
) -> jax.Array:
    """Conditional sigmoid loss over concept-pooled image embeddings.

    `z_ijk = scale·cos(x_{i|k}, t_j) + bias`. Triples `(i, j, k)` are weighted from
    `a = L[i, k]`, `b = L[j, k]` as in `conditional_sigmoid_loss`: `(+1, +1)` a positive (weight
    1 for `i = j`, `cross_positive_weight` β for `i ≠ j`), `(±1, ∓1)` negatives of weight 1,
    `(+1, 0)` / `(0, +1)` negatives of weight `unknown_weight`, anything else not counted.

    Dense over the concepts: a caption entry `(j, k)` with `L[j, k] = +1` meets `x_{i|k}` of
    every image `i`, so every `(image, concept)` embedding of the batch is needed (the batch's
    concept columns are its present concepts; a column without a `+1` counts nothing). Work is
    `B·K·B·D`, in tiles of captions and chunks of concepts (no `[B, B, K]` tensor); sharded, the
    image rows stay on their device and caption blocks travel round the ring.

    Args:
      image_cond_emb: `[B, K, D]` raw embeddings `x_{i|k}` of image `i` pooled for concept `k`.
      text_emb: `[B, D]` raw caption embeddings; caption `j` belongs to image `j`.
      concept_labels: integer `[B, K]` labels (as in `conditional_sigmoid_loss`).
      scale, bias: scalar logit scale and bias.
      unknown_weight: weight of the `(+1, 0)` / `(0, +1)` negatives.
      cross_positive_weight: β, the weight of `(+1, +1)` triples with `i ≠ j` (a Python 1.0
        costs nothing).
      normalize: `"triples"` (weighted mean over the counted triples of the global batch) or
        `"batch"` (sum / B).
      axis_name: mesh axis (or axes) the batch is split over inside `shard_map`; all three
        inputs are split along `B`.

    Returns:
      The scalar loss. With every `x_{i|k} = x_i` it is `conditional_sigmoid_loss` with gate
      "ones" (`z_ijk = scale·cos(x_i, t_j) + bias`).

    Example:
      >>> x, t = jnp.ones((4, 3, 8)), jnp.ones((4, 8))
      >>> labels = jnp.zeros((4, 3), jnp.int8).at[0, 1].set(1)
      >>> pooled_conditional_sigmoid_loss(x, t, labels, scale=10.0, bias=-10.0).shape
      ()
    """
    if image_cond_emb.ndim != 3 or text_emb.ndim != 2:
        raise ValueError(
            f"image_cond_emb must be [B, K, D] and text_emb [B, D], got "
            f"{image_cond_emb.shape} and {text_emb.shape}"
        )
    b, k, d = image_cond_emb.shape
    if text_emb.shape != (b, d):
        raise ValueError(f"text_emb must be [B={b}, D={d}], got {text_emb.shape}")
    if concept_labels.shape != (b, k):
        raise ValueError(f"concept_labels must be [B={b}, K={k}], got {concept_labels.shape}")
    if not jnp.issubdtype(concept_labels.dtype, jnp.integer):
        raise ValueError(f"concept_labels must be integer (int8), got {concept_labels.dtype}")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize={normalize!r} is not one of {NORMALIZE}")
    E.check_pair(image_cond_emb[:, 0], text_emb, axis_name)  # the mesh-axis check
    dtype = jnp.promote_types(jnp.result_type(image_cond_emb, text_emb), jnp.float32)
    x = jnp.asarray(image_cond_emb, dtype)
    t = jnp.asarray(text_emb, dtype)
    # Unit vectors up front: cos(u, v) = (u / max(‖u‖, ε))·(v / max(‖v‖, ε)), and every tile
    # is then one matmul.
    xn = x * E.inv_norm(jnp.sum(x * x, axis=-1))[..., None]
    tn = t * E.inv_norm(jnp.sum(t * t, axis=-1))[:, None]
    labels = jnp.asarray(concept_labels).astype(jnp.int8)
    consts = E.scalars(dtype, scale=scale, bias=bias, uw=unknown_weight, beta=cross_positive_weight)
    total = _pooled_sum(xn, tn, labels, consts, axis_name)
    if not (isinstance(cross_positive_weight, int | float) and cross_positive_weight == 1):
        # The tiles weigh every (+1, +1) triple at β; the same-image ones are topped up to 1
        # here, locally (as in conditional_sigmoid_loss).
        z = consts["scale"] * jnp.einsum("ikd,id->ik", xn, tn) + consts["bias"]
        own = jnp.sum(jnp.where(labels == 1, E.softplus(-z), 0.0))
        total += (1 - consts["beta"]) * own
    if normalize == "batch":
        return E.global_mean(total, b, axis_name)
    return _triple_mean(total, labels, consts, axis_name)


def _pooled_sum(xn, tn, labels, consts, axis_name) -> jax.Array:
    """This device's images × every caption of the batch × every concept, summed."""
    b, k, d = xn.shape
    tile_rows = E.divisor_at_most(b, E.TILE_ELEMENTS // b)
    kc = max(1, min(k, E.TILE_ELEMENTS // (b * tile_rows)))
    pad = -k % kc  # padding concepts have label 0 on both sides: weight 0 everywhere
    xn = jnp.pad(xn, ((0, 0), (0, pad), (0, 0)))
    labels_p = jnp.pad(labels, ((0, 0), (0, pad)))
    n = (k + pad) // kc
    local = {
        "x": xn.reshape(b, n, kc, d).transpose(1, 0, 2, 3),  # [n, b, kc, D]
        "lab": labels_p.reshape(b, n, kc).transpose(1, 0, 2),  # [n, b, kc]
        **consts,
    }
    block = {"t": tn, "lab": labels_p}
    return E.ring_sum(_pooled_tile, tile_rows, axis_name, xn.dtype, local, block)


def _pooled_tile(local: dict, tile: dict) -> jax.Array:
    """All local images × a caption tile `[c, D]`, one chunk of concepts at a time."""
    n, _, kc = local["lab"].shape
    lab_t = tile["lab"].reshape(-1, n, kc).transpose(1, 0, 2)  # [n, c, kc]
    shared = {"t": tile["t"]} | {name: local[name] for name in SCALARS}
    return E.scan_sum(_pooled_chunk, tile["t"].dtype, shared, (local["x"], local["lab"], lab_t))


def _pooled_chunk(shared: dict, chunk: tuple) -> jax.Array:
    x, a, b = chunk  # [bi, kc, D] unit vectors, labels [bi, kc] and [c, kc]
    bi, kc, d = x.shape
    num = (x.reshape(bi * kc, d) @ shared["t"].T).reshape(bi, kc, -1)  # [bi, kc, c]
    z = shared["scale"] * num + shared["bias"]
    w_pos, w_neg = _pair_weights(a[:, :, None], b.T[None, :, :], shared["uw"], shared["beta"])
    return _conditional_terms(z, w_pos, w_neg)
