"""CCLIP's conditional sigmoid loss: dense and support-bounded (`max_present`) paths."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from cclip_jax.losses import _engine as E

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
    if concept_emb.ndim != 2 or concept_emb.shape[1] != d:
        raise ValueError(f"concept_emb must be [K, D={d}], got shape {concept_emb.shape}")
    k = concept_emb.shape[0]
    if concept_labels.shape != (b, k):
        raise ValueError(f"concept_labels must be [B={b}, K={k}], got {concept_labels.shape}")
    if not jnp.issubdtype(concept_labels.dtype, jnp.integer):
        raise ValueError(f"concept_labels must be integer (int8), got {concept_labels.dtype}")
    if max_present is not None and (not isinstance(max_present, int) or max_present < 1):
        raise ValueError(f"max_present must be a positive int or None, got {max_present!r}")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize={normalize!r} is not one of {NORMALIZE}")
    dtype = x.dtype
    # The gate is g = c (identity, as the proposal writes it); the algebra needs only g².
    g2 = jnp.square(jnp.asarray(concept_emb).astype(dtype))
    labels = jnp.asarray(concept_labels).astype(jnp.int8)
    consts = E.scalars(dtype, scale=scale, bias=bias, uw=unknown_weight,
                       beta=cross_positive_weight)
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


def triple_weight_sum(labels: jax.Array, *, unknown_weight=1.0, cross_positive_weight=1.0,
                      axis_name: E.AxisName = None, dtype=jnp.float32) -> jax.Array:
    """`Σ_ijk w_ijk`: the summed weight of the counted triples of the global batch.

    From the labels alone: with `P_k, N_k, U_k` the counts of `+1, -1, 0` in column `k`,
    `Σ_k β·P_k² + (1 - β)·P_k + 2·P_k·N_k + 2·uw·P_k·U_k`. `labels [B, K]` (this device's rows
    under `axis_name`; the counts are then summed over the mesh axis).
    """
    b, k = labels.shape
    # Column sums over chunks of rows: a single sum over axis 0 would materialise `[B, K]`
    # converted copies (192 MiB at B = K = 4096 on CPU).
    rows = E.divisor_at_most(b, max(1, E.TILE_ELEMENTS // (4 * k)))
    count = lambda chunk: jnp.stack([jnp.sum(chunk == v, axis=0, dtype=jnp.int32)
                                     for v in (1, -1, 0)])
    counts = jnp.sum(lax.map(count, labels.reshape(b // rows, rows, k)), axis=0).astype(dtype)
    if axis_name is not None:
        counts = lax.psum(counts, axis_name)
    p, n, u = counts
    beta = jnp.asarray(cross_positive_weight, dtype)
    uw = jnp.asarray(unknown_weight, dtype)
    return jnp.sum(beta * p * p + (1 - beta) * p + 2 * p * n + 2 * uw * p * u)


def _triple_mean(total, labels, consts, axis_name) -> jax.Array:
    weight = triple_weight_sum(labels, unknown_weight=consts["uw"],
                               cross_positive_weight=consts["beta"], axis_name=axis_name,
                               dtype=total.dtype)
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


def _own_positives_sparse(x, t, g2, slots, consts) -> jax.Array:
    """As `_own_positives_dense`, over each row's (at most R) present slots: `O(b·R·D)`."""
    gidx, valid = slots  # [b, R]
    gates = g2[gidx]  # [b, R, D]
    xg, tg = x[:, None, :] * gates, t[:, None, :] * gates
    num = jnp.sum(xg * t[:, None, :], axis=-1)
    inv = E.inv_norm(jnp.sum(xg * x[:, None, :], -1)) * E.inv_norm(jnp.sum(tg * t[:, None, :], -1))
    z = consts["scale"] * num * inv + consts["bias"]
    return jnp.sum(jnp.where(valid, E.softplus(-z), 0.0))


def _pair_weights(a: jax.Array, b: jax.Array, uw: jax.Array, beta: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
    """Weights of the positive and negative terms for label pairs `(a, b)` (broadcast); every
    positive at `beta` (the caller tops up the same-image ones)."""
    pa, na, ua = a == 1, a == -1, a == 0
    pb, nb, ub = b == 1, b == -1, b == 0
    w_pos = beta * (pa & pb).astype(uw.dtype)
    w_neg = ((pa & nb) | (na & pb)).astype(uw.dtype) + uw * ((pa & ub) | (ua & pb))
    return w_pos, w_neg


def _conditional_terms(z, w_pos, w_neg) -> jax.Array:
    # softplus(-z) = softplus(z) - z saves a transcendental per element.
    return jnp.sum((w_pos + w_neg) * E.softplus(z) - w_pos * z)


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


def _sparse_tile(local: dict, tile: dict, *, chunk_rows: int) -> jax.Array:
    """Present entries of the local rows × a tile of `c` rows, both directions.

    Part 1: image entries `(i, k)` with `L[i,k] = +1` against the tile's captions `j`.
    Part 2: caption entries `(j, k)` with `L[j,k] = +1` against the tile's images `i`, for
    `L[i,k] ≠ +1` only (the `(+1, +1)` triples were counted by part 1). In both, the other
    side's label is `L_tile[j, k_e]`, so the two parts share their weights; they are stacked
    on a leading axis of 2 (side `s`), one op for both. Local rows are taken `chunk_rows` at a
    time so that their entries' `[2, e·R, c]` arrays stay in cache.

    The tile's gated norms `‖t_j ⊙ g_k‖² = (t_j ⊙ t_j)·g²_k` (and the images') come from one
    matmul: a `[K, 2c]` table over every concept when `local` holds `g2` (fewer FLOPs while
    `K ≤ b·R`), else per entry, `gates [E, D] × [D, 2c]`, and then nothing in a tile has `K` in
    its shape but the tile's labels, `[⌈K/4⌉, c]` int32 words.
    """
    v2 = jnp.stack([tile["t"], tile["x"]])  # [2, c, D]: what image / caption entries meet
    _, c, d = v2.shape
    shared = {
        "v2": v2,
        "lab": tile["lab"].reshape(-1, c),  # L_tileᵀ, 4 concepts a word: see `_tile_major`
    } | {name: local[name] for name in SCALARS}
    if "g2" in local:
        k = local["g2"].shape[0]
        inv = E.inv_norm(local["g2"] @ (v2 * v2).reshape(2 * c, d).T)  # [K, 2c]
        # rows s·K + k: side s's inverse norms under concept k, gathered by row
        shared["inv2"] = inv.reshape(k, 2, c).transpose(1, 0, 2).reshape(2 * k, c)
    else:
        shared["sq2"] = v2 * v2
    rows = {name: local[name] for name in ("x", "t", "gates", "gidx", "valid")}
    return E.scan_sum(_sparse_rows, v2.dtype, shared, E.split_rows(rows, chunk_rows))


def _sparse_rows(shared: dict, rows: dict) -> jax.Array:
    """Entries of `e` local rows (`x, t [e, D]`, `gates [e, R, D]`, `gidx, valid [e, R]`) ×
    the tile's `c` rows, `E = e·R`."""
    e, r, d = rows["gates"].shape
    c = shared["v2"].shape[1]
    gidx = rows["gidx"].reshape(-1)
    # L_tile[j, k_e] [E, c]: byte k_e % 4 of word row k_e // 4, sign-extended. An empty slot's
    # labels read as 2, which counts nothing.
    words = _rows_of(shared["lab"], gidx // 4)
    shift = (24 - 8 * (gidx % 4))[:, None]
    lab = jnp.where(rows["valid"].reshape(-1, 1), (words << shift) >> 24, 2).astype(jnp.int8)
    if "inv2" in shared:
        k = shared["inv2"].shape[0] // 2
        inv2 = _rows_of(shared["inv2"], jnp.concatenate([gidx, gidx + k])).reshape(2, e * r, c)
    else:
        sq = jnp.einsum("ed,scd->sec", rows["gates"].reshape(e * r, d), shared["sq2"])
        inv2 = E.inv_norm(sq)
    x2 = jnp.stack([rows["x"], rows["t"]])  # [2, e, D]
    scalars = tuple(shared[name] for name in SCALARS)
    return _entry_terms(x2, rows["gates"], shared["v2"], inv2, scalars, lab)


@jax.custom_vjp
def _entry_terms(x2, gates, v2, inv2, scalars, lab):
    """The loss sum of `E = e·R` entries × `c` tile rows, both sides.

    Entry `(i, n)` of side `s` (`s = 0`: images, `1`: captions; `n`: the row's n-th slot) is
    `u = x2[s, i] ⊙ gates[i, n]`; it meets `v2[s, j]` (`s = 0`: the tile's captions, `1`: its
    images) in `z = scale·(u·v2[s, j])·inv_u·inv2[s, e, j] + bias`, with `inv_u = 1/‖u‖` and
    `inv2` the tile side's inverse gated norms. `lab [E, c]` is the tile row's label of the
    entry's concept: side 0 counts its `+1, -1, 0`, side 1 only its `-1, 0`.

    A hand-written VJP: XLA materialises each `[2, E, c]` array of it once, and the row sums
    that autodiff would take over `[E, c]` come from the `[E, D]` product it already has.
    """
    _, _, num, inv_u2 = _entry_products(x2, gates, v2)
    return _big_sum(_logit_terms(num, inv2, scalars[0] * inv_u2, lab, scalars, "loss"))


def _entry_products(x2, gates, v2):
    """The entries `u2 [2, E, D]`, their squared and inverse norms `[2, E]`, and `u2·v2`."""
    e, r, d = gates.shape
    u2 = (x2[:, :, None, :] * gates).reshape(2, e * r, d)
    sq_u2 = jnp.sum((x2 * x2)[:, :, None, :] * gates, axis=-1).reshape(2, e * r)
    return u2, sq_u2, jnp.einsum("sed,scd->sec", u2, v2), E.inv_norm(sq_u2)


def _logit_terms(num, inv2, a, lab, scalars, what):
    """Elementwise over `[2, E, c]`: `w·softplus(z) - w₊·z` (`"loss"`, as softplus(-z) =
    softplus(z) - z), its derivative in `z` (`"grad"`), or the weights' derivatives."""
    _, bias, uw, beta = scalars
    z = a[:, :, None] * (num * inv2) + bias
    image_side = lax.broadcasted_iota(jnp.int32, (2, 1, 1), 0) == 0
    pos = image_side & (lab == 1)
    w_pos = jnp.where(pos, beta, 0.0)
    w = w_pos + jnp.where(lab == -1, 1.0, jnp.where(lab == 0, uw, 0.0))
    ez = jnp.exp(-jnp.abs(z))
    if what == "grad":
        return w * jnp.where(z >= 0, 1.0, ez) / (1.0 + ez) - w_pos
    sp = jnp.maximum(z, 0) + jnp.log1p(ez)
    if what == "loss":
        return w * sp - w_pos * z
    return jnp.where(lab == 0, sp, 0.0), jnp.where(pos, sp - z, 0.0)  # d/d uw, d/d β


def _entry_fwd(x2, gates, v2, inv2, scalars, lab):
    u2, sq_u2, num, inv_u2 = _entry_products(x2, gates, v2)  # num [2, E, c]
    a = scalars[0] * inv_u2
    loss = _big_sum(_logit_terms(num, inv2, a, lab, scalars, "loss"))
    g = _logit_terms(num, inv2, a, lab, scalars, "grad")  # dloss/dz
    return loss, (x2, gates, u2, sq_u2, inv_u2, v2, inv2, scalars, num, g, lab)


def _entry_bwd(res, ct):
    x2, gates, u2, sq_u2, inv_u2, v2, inv2, scalars, num, g, lab = res
    e, r, d = gates.shape
    scale = scalars[0]
    a = ct * scale * inv_u2  # [2, E]: dz/dnum = a·inv2 (with the cotangent)
    gi = g * inv2
    m = jnp.einsum("sec,scd->sed", gi, v2)  # [2, E, D]
    d_v2 = jnp.einsum("sec,sed->scd", gi, a[:, :, None] * u2)
    row = jnp.sum(u2 * m, axis=-1)  # Σ_j g·num·inv2 of each entry, from [E, D] not [E, c]
    d_inv2 = (a[:, :, None] * g) * num
    # inv_u = rsqrt(max(sq_u2, ε²)): d/d sq_u2 = -inv_u³/2 where not clamped
    d_sq = jnp.where(sq_u2 > E.EPS * E.EPS, -0.5 * inv_u2**3, 0.0) * (ct * scale * row)
    # u2 = x2 ⊙ gates and sq_u2 = (x2 ⊙ x2)·gates. The sums over the slots n and the sides s are
    # written as adds of slices: XLA:CPU's reductions over a middle axis are slow.
    d_u = (a[:, :, None] * m).reshape(2, e, r, d)
    d_sq = d_sq.reshape(2, e, r, 1)
    d_x2 = sum(gates[:, n] * (d_u[:, :, n] + 2 * d_sq[:, :, n] * x2) for n in range(r))
    d_gates = sum(x2[s][:, None, :] * (d_u[s] + d_sq[s] * x2[s][:, None, :]) for s in range(2))
    # XLA drops the weights' derivatives when no one asks for them
    d_uw, d_beta = _logit_terms(num, inv2, scale * inv_u2, lab, scalars, "weights")
    d_scalars = (ct * jnp.sum(row * inv_u2), ct * _big_sum(g), ct * _big_sum(d_uw),
                 ct * _big_sum(d_beta))
    d_scalars = tuple(v.astype(s.dtype) for v, s in zip(d_scalars, scalars, strict=True))
    return d_x2, d_gates, d_v2, d_inv2, d_scalars, None


_entry_terms.defvjp(_entry_fwd, _entry_bwd)


def _big_sum(a: jax.Array) -> jax.Array:
    """`jnp.sum` of a large elementwise expression, which XLA then computes in one loop. The
    `where` (a no-op) keeps XLA:CPU's YNNPACK reduction from absorbing the expression's last
    ops and having each of their operands written out as a full array (3-5x slower)."""
    return jnp.sum(jnp.where(jnp.isnan(a), jnp.nan, a))


SCALARS = ("scale", "bias", "uw", "beta")


def _rows_of(table: jax.Array, index: jax.Array) -> jax.Array:
    """`table[index]` for in-range indices. Skipping the clamp XLA's default gather does is
    ~25% of a sparse tile on CPU, where the gather is fused into the elementwise loop."""
    return table.at[index].get(mode="promise_in_bounds")


# ----------------------------------------------------------------------------------------------
# The two conditional paths: local precomputation, then the (ring) sum over tiles.


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


def _sparse_sum(x, t, g2, labels, consts, max_present, axis_name):
    b, d = x.shape
    k = g2.shape[0]
    r = min(max_present, k)
    gidx, valid, overflow = _present_slots(labels, max_present, r)
    # The gates of the b·R entries, gathered once: tiles neither gather from g2 nor scatter
    # their gradients into a [K, D] accumulator.
    gates = _rows_of(g2, gidx.reshape(-1)).reshape(b, r, d)
    local = {"x": x, "t": t, "gates": gates, "gidx": gidx, "valid": valid, **consts}
    # A tile's norms from a [K, 2c] table cost 2·K·2c·D, per entry 2·b·R·2c·D: the table only
    # while K ≤ b·R. Without it, nothing in a tile scales with K but its labels, K·c bytes.
    if k <= b * r:
        local["g2"] = g2
    # Tiles of the visiting rows bound the [K, 2c] table and the [K, c] labels; chunks of local
    # rows bound the entries' [2, e·R, c] and [2, e·R, D] arrays to `entry_elements`, which keeps
    # them in cache (and a chunk's logits below a tile's).
    tile_rows = E.divisor_at_most(b, min(256, E.TILE_ELEMENTS // k))
    entry_elements = E.TILE_ELEMENTS // 8
    chunk_rows = E.divisor_at_most(b, entry_elements // (2 * r * max(tile_rows, d)))
    block = {"x": x, "t": t, "lab": _tile_major(labels, tile_rows)}
    tile_fn = functools.partial(_sparse_tile, chunk_rows=chunk_rows)
    total = E.ring_sum(tile_fn, tile_rows, axis_name, x.dtype, local, block)
    return total, overflow, (gidx, valid)


def _tile_major(labels: jax.Array, tile_rows: int) -> jax.Array:
    """`labels [b, K]` int8 with each tile of `tile_rows` rows stored transposed, four concepts
    to an int32 word: `[b, ⌈K/4⌉]` int32 in which a tile's rows, `.reshape(⌈K/4⌉, tile_rows)`,
    hold in word `[q, j]` the labels of tile row `j` for concepts `4q .. 4q + 3` (byte `m` for
    concept `4q + m`, as a bitcast packs them on every little-endian platform JAX runs on).

    The entries then gather whole rows. Transposing once here, not in every tile, keeps XLA
    from fusing a strided column gather into a tile's loop, and transposing words moves a
    quarter of the elements: XLA:CPU's transposes are per element, ~4 ns each here.
    """
    b, k = labels.shape
    n, pad = b // tile_rows, -k % 4  # padded concepts are never gathered
    words = lax.bitcast_convert_type(
        jnp.pad(labels, ((0, 0), (0, pad))).reshape(n, tile_rows, (k + pad) // 4, 4), jnp.int32)
    return words.transpose(0, 2, 1).reshape(b, (k + pad) // 4)


def _present_slots(labels: jax.Array, max_present: int, r: int):
    """Column indices of each row's `+1` entries, `[b, r]`, their validity, and overflow.

    One `top_k` over a key that is positive (and larger leftwards) exactly at the `+1`s: XLA's
    CPU top-k keeps `r` per row in one pass over `[b, K]` (while its outputs are not sliced,
    which would turn it back into a full sort), where a cumsum rank took `r` more passes.
    """
    b, k = labels.shape
    present = labels == 1
    col = lax.broadcasted_iota(jnp.int32, (b, k), 1)
    # k - col is distinct in a row (slots come in column order) and exact in float32 below
    # 2^24; XLA's fast top-k is float32's.
    key_dtype = jnp.float32 if k < 2**24 else jnp.int32
    top, gidx = lax.top_k(jnp.where(present, (k - col).astype(key_dtype), 0), r)
    if max_present >= k:
        overflow = jnp.bool_(False)
    else:
        # int16 counts (exact below 2^15) halve the converted [b, K] array XLA sums
        count_dtype = jnp.int16 if k < 2**15 else jnp.int32
        overflow = jnp.any(jnp.sum(present, axis=1, dtype=count_dtype) > max_present)
    return gidx, top > 0, overflow
