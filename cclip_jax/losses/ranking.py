"""CCLIP's conditional ranking loss: a multi-positive softmax over the batch, per concept.

The conditional sigmoid loss scores each (image, caption, concept) triple on its own, against a
bias. This is its ranking form: for each present entry (image `i` has concept `k`), a softmax
over the batch's captions under the gate `c_k`, whose positives are the captions that have `k`
too; and the same for each present caption entry over the batch's images. It has no bias, so
no constant-cosine point (every logit equal) at which it is minimised by collapse.

How it is computed. The loss of an entry is a log of a ratio of two sums over the batch, so it
takes two passes, each over tiles of captions and chunks of concepts (the dense conditional
path's layout: no `[B, B, K]` tensor, one `[kc, b, c]` tile of logits at a time):

1. Log-sums. Every entry's two log-sums (numerator over positives, denominator over weighted
   positives, negatives and unknowns) are accumulated as running log-sum-exps, so they are
   exact at any scale (a fixed shift by `|scale|` would underflow a float32 numerator whose
   logits all lie ~90 below `|scale|`: at cosine 0 once `|scale|` nears 90). Sharded, caption
   blocks travel once round the ring of `ppermute`s; a block's caption entries take their
   sums over each device's images as it passes, and the last hop brings them home, as
   `_engine._ring_fwd` brings home a block's gradient. No gradient is taken here.
2. Gradients. With every log-sum `ℓ` fixed, `∂ log Σ_j w_j e^{z_j} = Σ_j w_j e^{z_j - ℓ} ∂z_j`:
   the loss's gradient is that of the surrogate `Σ_entries Σ_j (w_j e^{z_j - ℓ_D} -
   [j ∈ P] e^{z_j - ℓ_N})`, a plain sum of terms, which `_engine.ring_sum` computes tile by tile
   with its forward-computed gradients. A custom VJP runs this pass only when a gradient is
   asked for: a plain evaluation is one pass.

Memory: one tile of logits plus the entries' log-sum tables, four `[b, K]` floats per device
(with the labels' `[b, K]`); nothing grows with the number of devices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from cclip_jax.losses import _engine as E
from cclip_jax.losses._weights import check_concepts


def conditional_ranking_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    concept_emb: jax.Array,
    concept_labels: jax.Array,
    *,
    scale: jax.Array | float,
    unknown_weight: jax.Array | float = 1.0,
    axis_name: E.AxisName = None,
) -> jax.Array:
    """Multi-positive (MIL-NCE) softmax form of the conditional loss, in both directions.

    `z_ijk = scale·cos(x_i ⊙ g_k, t_j ⊙ g_k)` with the gate `g_k = c_k`, as in
    `conditional_sigmoid_loss`, but no bias. With the label column `L[:, k]`, positives
    `P_k = {j: L[j,k] = +1}`, and weights `w_j = 1` for `L[j,k] ∈ {+1, -1}`, `unknown_weight`
    for `0`, and 0 otherwise (labels outside {-1, 0, +1} count nowhere):

        image entry (i, k), L[i,k] = +1:    ℓ_ik = -log( Σ_{j∈P_k} e^{z_ijk} / Σ_j w_j e^{z_ijk} )
        caption entry (j, k), L[j,k] = +1:  ℓ'_jk = -log( Σ_{i∈P_k} e^{z_ijk} / Σ_i w_i e^{z_ijk} )
        loss = (Σ ℓ + Σ ℓ') / (2·#{L = +1})

    over the global batch (`j = i` is always a positive of its own entry); 0, with zero
    gradients, when the batch has no `+1`. With every cosine equal, an entry's loss is
    `log((|P_k| + |N_k| + uw·|U_k|) / |P_k|)`.

    Why the sum of positives inside the log (MIL-NCE, Miech et al., 2020), rather than the mean
    of `-log` over each positive (SupCon's L_out): concept labels make many positives per entry
    (every other image with the concept), and they are weak and noisy: two images sharing a
    concept need not look alike under its gate. The mean over positives is minimised only when
    every positive's logit is equally high, so it pulls all of a concept's images onto one
    point of its gated subspace, and a single mislabelled positive pulls as hard as the
    image's own caption. The sum is minimised by the positives' total mass beating the
    negatives: the entry's own caption can carry it, and the pull on each positive is its
    softmax share among the positives, so outliers are pulled least. Its minimum is 0 for
    every label pattern, where the mean form's (`log |P_k|`) depends on the labels.

    Args:
      image_emb: `[B, D]` raw image embeddings.
      text_emb: `[B, D]` raw caption embeddings; caption `j` belongs to image `j`.
      concept_emb: `[K, D]` concept embeddings (replicated when sharded).
      concept_labels: integer `[B, K]`: `+1` present, `-1` absent, `0` unknown.
      scale: scalar logit scale (the softmax's inverse temperature).
      unknown_weight: weight `uw ≥ 0` of the unknowns in the denominators. At `uw = 0` they
        drop out (and `uw` gets no gradient from them).
      axis_name: as in `sigmoid_loss`: inside `shard_map`, embeddings and label rows split
        along `B`, concepts replicated; the sums then run over the global batch.

    Returns:
      The scalar loss.

    Example:
      >>> x, t, c = jnp.ones((4, 8)), jnp.ones((4, 8)), jnp.ones((3, 8))
      >>> labels = jnp.zeros((4, 3), jnp.int8).at[0, 1].set(1)
      >>> conditional_ranking_loss(x, t, c, labels, scale=10.0).shape
      ()
    """
    x, t = E.check_pair(image_emb, text_emb, axis_name)
    b, d = x.shape
    check_concepts(concept_emb, concept_labels, b, d)
    dtype = x.dtype
    g2 = jnp.square(jnp.asarray(concept_emb).astype(dtype))  # the gate algebra needs only g²
    labels = jnp.asarray(concept_labels).astype(jnp.int8)
    consts = E.scalars(dtype, scale=scale, uw=unknown_weight)
    axes = None if axis_name is None else E.axis_tuple(axis_name)
    total = _ranking_sum(axes, x, t, g2, labels, consts)
    count = jnp.sum(labels == 1, dtype=jnp.int32)
    if axes is not None:
        total, count = lax.psum((total, count), axes)
    return total / (2 * jnp.maximum(count, 1)).astype(dtype)


# ----------------------------------------------------------------------------------------------
# The two passes. Layouts: `g2 [n, kc, D]` and the local labels `[n, kc, b]` in concept chunks
# (concept-major, as the chunk loop reads them); the rows that travel (`t`, labels, caption
# tables) row-major `[b, n·kc]`, so that `split_rows` cuts them into caption tiles.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ranking_sum(axes, x, t, g2, labels, consts) -> jax.Array:
    """`Σ (ℓ_D - ℓ_N)` over this device's present image and caption entries."""
    return _forward(axes, x, t, g2, labels, consts)[0]


def _ranking_fwd(axes, x, t, g2, labels, consts):
    total, tables = _forward(axes, x, t, g2, labels, consts)
    return total, (x, t, g2, labels, consts, tables)


def _ranking_bwd(axes, residuals, ct):
    x, t, g2, labels, consts, tables = residuals
    surrogate = lambda x, t, g2, consts: _surrogate_sum(axes, x, t, g2, labels, consts, tables)
    dx, dt, dg2, dconsts = jax.vjp(surrogate, x, t, g2, consts)[1](ct)
    return dx, dt, dg2, None, dconsts


_ranking_sum.defvjp(_ranking_fwd, _ranking_bwd)


def _layout(x, g2, labels):
    """Caption tile rows, `g2 [n, kc, D]`, labels `[n, kc, b]` and row-major `[b, n·kc]`."""
    b, d = x.shape
    k = g2.shape[0]
    tile_rows = E.divisor_at_most(b, E.TILE_ELEMENTS // b)
    kc = max(1, min(k, E.TILE_ELEMENTS // (b * tile_rows)))
    pad = -k % kc  # zero gates whose label columns hold no +1: no entry, no weight
    g2 = jnp.pad(g2, ((0, pad), (0, 0)))
    rows = jnp.pad(labels, ((0, 0), (0, pad)), constant_values=2)
    n = (k + pad) // kc
    return tile_rows, g2.reshape(n, kc, d), rows.reshape(b, n, kc).transpose(1, 2, 0), rows


def _forward(axes, x, t, g2, labels, consts):
    """Pass 1: the entries' log-sums, `Σ (ℓ_D - ℓ_N)` over present entries, and the tables
    for pass 2 (`+inf` at entries that are not present, so their surrogate terms vanish)."""
    tile_rows, g2c, lab_c, rows = _layout(x, g2, labels)
    local = {"x": x, "g2": g2c, "lab": lab_c}
    block = {"t": t, "lab": rows}
    (img_n, img_d), (cap_n, cap_d) = _log_sums(axes, tile_rows, local, block, consts)
    total = zero = E.zero_sum(x.dtype, (x, t))
    tables = []
    for lab, num, den in ((lab_c, img_n, img_d), (rows, cap_n, cap_d)):
        present = lab == 1
        total += jnp.sum(jnp.where(present, den - num, zero))
        tables += [jnp.where(present, num, jnp.inf), jnp.where(present, den, jnp.inf)]
    return total, tuple(tables)


def _log_sums(axes, tile_rows, local, block, consts):
    """Running log-sum-exps `(ℓ_N, ℓ_D)` of the local image entries `[n, kc, b]` and of the
    block's caption entries `[b, n·kc]`, over the global batch."""
    n, kc, b = local["lab"].shape
    dtype = local["x"].dtype
    empty = jnp.full((b, n * kc), -jnp.inf, dtype) + E.zero_sum(dtype, (local, block))
    img = (empty.reshape(b, n, kc).transpose(1, 2, 0),) * 2
    visit = functools.partial(_log_sums_block, tile_rows, local, consts)
    img, cap = visit(block, img, (empty, empty))
    if axes is None:
        return img, cap

    def step(carry, _):
        visitor, cap, img = carry
        visitor, cap = E._shift((visitor, cap), axes)
        img, cap = visit(visitor, img, cap)
        return (visitor, cap, img), None

    (_, cap, img), _ = lax.scan(step, (block, cap, img), length=lax.axis_size(axes) - 1)
    return img, E._shift(cap, axes)  # the last hop brings every block's sums home


def _log_sums_block(tile_rows, local, consts, block, img, cap):
    n, kc, _ = local["g2"].shape

    def tile(img, visit):
        blk, cap = visit
        c = blk["t"].shape[0]
        by_chunk = lambda a: a.reshape(c, n, kc).transpose(1, 2, 0)  # [c, n·kc] -> [n, kc, c]
        chunks = (local["g2"], local["lab"], *img, by_chunk(blk["lab"]), *map(by_chunk, cap))
        shared = (local["x"], blk["t"], consts)
        img_n, img_d, cap_n, cap_d = lax.map(functools.partial(_log_sums_chunk, shared), chunks)
        by_row = lambda a: a.transpose(2, 0, 1).reshape(c, n * kc)
        return (img_n, img_d), (by_row(cap_n), by_row(cap_d))

    img, cap = lax.scan(tile, img, E.split_rows((block, cap), tile_rows))
    return img, jax.tree.map(lambda a: a.reshape(-1, a.shape[-1]), cap)


def _log_sums_chunk(shared, chunk):
    """One chunk of concepts: `[kc, bi] / [kc, c]` log-sums merged with this tile's terms."""
    x, t, consts = shared
    g2, lab_i, img_n, img_d, lab_j, cap_n, cap_d = chunk
    z = _logits(x, t, g2, consts["scale"])  # [kc, bi, c]
    floor = -jnp.abs(consts["scale"])  # no logit is below it: the max of an empty set
    w_i, p_i = _weights(lab_i, consts["uw"])
    w_j, p_j = _weights(lab_j, consts["uw"])

    def merge(acc, w, axis):  # acc ⊕ log Σ_axis w·e^z, exact at any scale
        zm = jnp.where(w > 0, z, floor)
        m = jnp.max(zm, axis=axis, keepdims=True)
        s = jnp.sum(w * jnp.exp(zm - m), axis=axis)
        return jnp.logaddexp(acc, jnp.squeeze(m, axis) + jnp.log(s))

    img = merge(img_n, p_j[:, None, :], 2), merge(img_d, w_j[:, None, :], 2)
    cap = merge(cap_n, p_i[:, :, None], 1), merge(cap_d, w_i[:, :, None], 1)
    return (*img, *cap)


def _surrogate_sum(axes, x, t, g2, labels, consts, tables):
    """Pass 2: `Σ_entries Σ_j (w_j e^{z_j - ℓ_D} - [j ∈ P] e^{z_j - ℓ_N})`, whose gradient at
    the pass-1 tables is the loss's. The tables travel as integers (bit-casts): constants, so
    the engine computes and carries no gradient for them."""
    tile_rows, g2c, lab_c, rows = _layout(x, g2, labels)
    img_n, img_d, cap_n, cap_d = (_frozen(a) for a in tables)
    local = {"x": x, "g2": g2c, "lab": lab_c, "img_n": img_n, "img_d": img_d, **consts}
    block = {"t": t, "lab": rows, "cap_n": cap_n, "cap_d": cap_d}
    return E.ring_sum(_surrogate_tile, tile_rows, axes, x.dtype, local, block)


def _surrogate_tile(local: dict, tile: dict) -> jax.Array:
    n, kc, _ = local["g2"].shape
    c = tile["t"].shape[0]
    by_chunk = lambda a: a.reshape(c, n, kc).transpose(1, 2, 0)
    shared = {"x": local["x"], "t": tile["t"], "scale": local["scale"], "uw": local["uw"]}
    chunks = (local["g2"], local["lab"], local["img_n"], local["img_d"],
              *(by_chunk(tile[name]) for name in ("lab", "cap_n", "cap_d")))  # fmt: skip
    return E.scan_sum(_surrogate_chunk, local["x"].dtype, shared, chunks)


def _surrogate_chunk(shared: dict, chunk: tuple) -> jax.Array:
    g2, lab_i, img_n, img_d, lab_j, cap_n, cap_d = chunk
    dtype = shared["x"].dtype
    img_n, img_d, cap_n, cap_d = (_thawed(a, dtype) for a in (img_n, img_d, cap_n, cap_d))
    z = _logits(shared["x"], shared["t"], g2, shared["scale"])  # [kc, bi, c]
    w_i, p_i = _weights(lab_i, shared["uw"])
    w_j, p_j = _weights(lab_j, shared["uw"])

    def mass(w, lse):  # w·e^{z - ℓ}, its argument masked first: no inf·0 in any gradient
        return w * jnp.exp(jnp.where(w > 0, z, -jnp.inf) - lse)

    img = mass(w_j[:, None, :], img_d[:, :, None]) - mass(p_j[:, None, :], img_n[:, :, None])
    cap = mass(w_i[:, :, None], cap_d[:, None, :]) - mass(p_i[:, :, None], cap_n[:, None, :])
    return jnp.sum(img + cap)


# ----------------------------------------------------------------------------------------------
# Small helpers.


def _logits(x, t, g2, scale) -> jax.Array:
    """`scale·cos(x_i ⊙ g_k, t_j ⊙ g_k)`, `[kc, bi, c]`: one matmul per concept."""
    inv_x = E.inv_norm((x * x) @ g2.T).T  # [kc, bi]
    inv_t = E.inv_norm((t * t) @ g2.T).T  # [kc, c]
    num = (x[None, :, :] * g2[:, None, :]) @ t.T
    return scale * num * inv_x[:, :, None] * inv_t[:, None, :]


def _weights(lab: jax.Array, uw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Denominator weights (1 for ±1, `uw` for 0, 0 otherwise) and the positives' mask."""
    pos = lab == 1
    known = (pos | (lab == -1)).astype(uw.dtype)
    return jnp.where(lab == 0, uw, known), pos.astype(uw.dtype)


def _frozen(a: jax.Array) -> jax.Array:
    return lax.bitcast_convert_type(a, jnp.dtype(f"int{8 * a.dtype.itemsize}"))


def _thawed(a: jax.Array, dtype) -> jax.Array:
    return lax.bitcast_convert_type(a, dtype)
