"""The support-bounded (`max_present`) path of the conditional sigmoid loss.

Only triples with a `+1` side count, and they are enumerated from the (at most `R`) present
concepts of each row: work is `O(B·R·B·D)` instead of `O(B·B·K·D)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from cclip_jax.losses import _engine as E
from cclip_jax.losses._weights import SCALARS


def _own_positives_sparse(x, t, g2, slots, consts) -> jax.Array:
    """As `_own_positives_dense`, over each row's (at most R) present slots: `O(b·R·D)`."""
    gidx, valid = slots  # [b, R]
    gates = g2[gidx]  # [b, R, D]
    xg, tg = x[:, None, :] * gates, t[:, None, :] * gates
    num = jnp.sum(xg * t[:, None, :], axis=-1)
    inv = E.inv_norm(jnp.sum(xg * x[:, None, :], -1)) * E.inv_norm(jnp.sum(tg * t[:, None, :], -1))
    z = consts["scale"] * num * inv + consts["bias"]
    return jnp.sum(jnp.where(valid, E.softplus(-z), 0.0))


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
    d_scalars = (
        ct * jnp.sum(row * inv_u2),
        ct * _big_sum(g),
        ct * _big_sum(d_uw),
        ct * _big_sum(d_beta),
    )
    d_scalars = tuple(v.astype(s.dtype) for v, s in zip(d_scalars, scalars, strict=True))
    return d_x2, d_gates, d_v2, d_inv2, d_scalars, None


_entry_terms.defvjp(_entry_fwd, _entry_bwd)


def _big_sum(a: jax.Array) -> jax.Array:
    """`jnp.sum` of a large elementwise expression, which XLA then computes in one loop. The
    `where` (a no-op) keeps XLA:CPU's YNNPACK reduction from absorbing the expression's last
    ops and having each of their operands written out as a full array (3-5x slower)."""
    return jnp.sum(jnp.where(jnp.isnan(a), jnp.nan, a))


def _rows_of(table: jax.Array, index: jax.Array) -> jax.Array:
    """`table[index]` for in-range indices. Skipping the clamp XLA's default gather does is
    ~25% of a sparse tile on CPU, where the gather is fused into the elementwise loop."""
    return table.at[index].get(mode="promise_in_bounds")


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
        jnp.pad(labels, ((0, 0), (0, pad))).reshape(n, tile_rows, (k + pad) // 4, 4), jnp.int32
    )
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
