"""Sigmoid (SigLIP) and conditional sigmoid (CCLIP) losses: exact, ring-sharded, memory-bounded.

SigLIP (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training") scores every image
against every caption with an independent sigmoid. CCLIP (the proposal this project implements,
"Conditional Contrastive Language-Image Pre-training") adds a concept axis: a concept embedding
`c_k` gates the image and caption embeddings element-wise and the pair is scored by
`cos(x_i ⊙ c_k, t_j ⊙ c_k)`, so an image and another image's caption can be a conditional
positive when both have the concept.

This module is pure `jax.numpy`; it imports nothing else from `cclip_jax` (nor flax, grain, ...)
so that other projects can use it as it is.

How it is computed. No path materialises the logit tensor (`[B, B]` or `[B, B, K]`): captions
are visited in tiles of rows, and each tile's contribution is rematerialised in the backward pass
(`jax.checkpoint`), so peak temporaries are one tile. With `axis_name`, the batch is split over
a mesh axis and blocks of rows travel round a ring of `ppermute`s. The backward pass is a custom
VJP that runs the ring again and sends each block's gradient home with it. A device therefore
holds its own block and one visiting block, and its memory does not grow with the number of
devices (storing every visiting block for autodiff would).

The conditional loss rests on `cos(x ⊙ g, t ⊙ g) = (x ⊙ g²)·t / (‖x ⊙ g‖ ‖t ⊙ g‖)` with
`‖x ⊙ g‖² = (x ⊙ x)·(g ⊙ g)`: the gated norms of a tile are one matmul, the logits of one concept
are one matmul. With `max_present=R`, only triples with a `+1` side count, and they are enumerated
from the (at most `R`) present concepts of each row: work is `O(B·R·B·D)` instead of `O(B·B·K·D)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["EPS", "conditional_sigmoid_loss", "sigmoid_loss"]

EPS = 1e-6
"""`ε` of the cosine: `cos(u, v) = u·v / (max(‖u‖, ε)·max(‖v‖, ε))`."""

# Elements of the largest per-tile temporary (4M f32 = 16 MiB). Every path sizes its tiles so
# that one tile's logits stay below it; peak memory is a small multiple of this.
_TILE_ELEMENTS = 1 << 22

AxisName = str | tuple[str, ...] | None


# ----------------------------------------------------------------------------------------------
# Public API.


def sigmoid_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    *,
    scale: jax.Array | float,
    bias: jax.Array | float,
    axis_name: AxisName = None,
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
    x, t = _check_pair(image_emb, text_emb, axis_name)
    dtype = x.dtype
    b = x.shape[0]
    ids = jnp.arange(b, dtype=jnp.int32) + _block_offset(b, axis_name)
    local = {
        "x": x * _inv_norm(jnp.sum(x * x, axis=-1))[:, None],
        "ids": ids,
        **_scalars(dtype, scale=scale, bias=bias),
    }
    block = {"t": t, "ids": ids}
    tile_rows = _divisor_at_most(b, _TILE_ELEMENTS // b)
    total = _ring_sum(_sigmoid_tile, tile_rows, axis_name, dtype, local, block)
    return _global_mean(total, b, axis_name)


def conditional_sigmoid_loss(
    image_emb: jax.Array,
    text_emb: jax.Array,
    concept_emb: jax.Array,
    concept_labels: jax.Array,
    *,
    scale: jax.Array | float,
    bias: jax.Array | float,
    unknown_weight: jax.Array | float = 1.0,
    max_present: int | None = None,
    axis_name: AxisName = None,
) -> jax.Array:
    """CCLIP loss over the image × caption × concept tensor of gated logits.

    `z_ijk = scale·cos(x_i ⊙ g_k, t_j ⊙ g_k) + bias` with the gate `g_k = c_k`. With
    `a = L[i, k]` and `b = L[j, k]`: `(+1, +1)` is a positive of weight 1; `(+1, -1)` and
    `(-1, +1)` are negatives of weight 1; `(+1, 0)` and `(0, +1)` are negatives of weight
    `unknown_weight`; every other triple (and any label outside {-1, 0, +1}) is ignored. The
    loss is `Σ_ijk w_ijk softplus(-y_ijk z_ijk) / B`.

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
      max_present: static bound `R` on the `+1` entries of a row. Work and memory then scale
        with `B·R·B·D` instead of `B·B·K·D`. A row with more than `R` present concepts makes
        the loss (and its gradients) NaN: loud, never silently wrong.
      axis_name: as in `sigmoid_loss`; `concept_labels` is split along `B` like the embeddings.

    Returns:
      The scalar loss. With every `c_k = 1`, `L = I` (`K = B`) and `unknown_weight = 0.5` it
      equals `sigmoid_loss` exactly.

    Example:
      >>> x, t, c = jnp.ones((4, 8)), jnp.ones((4, 8)), jnp.ones((3, 8))
      >>> labels = jnp.zeros((4, 3), jnp.int8).at[0, 1].set(1)
      >>> conditional_sigmoid_loss(x, t, c, labels, scale=10.0, bias=-10.0).shape
      ()
    """
    x, t = _check_pair(image_emb, text_emb, axis_name)
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
    dtype = x.dtype
    g2 = jnp.square(concept_emb.astype(dtype))  # gate g = c (identity, as the proposal writes)
    labels = concept_labels.astype(jnp.int8)
    consts = _scalars(dtype, scale=scale, bias=bias, uw=unknown_weight)
    if max_present is None:
        total = _dense_sum(x, t, g2, labels, consts, axis_name)
        return _global_mean(total, b, axis_name)
    total, overflow = _sparse_sum(x, t, g2, labels, consts, max_present, axis_name)
    if axis_name is not None:
        overflow = lax.pmax(overflow.astype(jnp.int32), axis_name) > 0
    # Multiplying (not `where`) makes the gradients NaN too, so a training step cannot
    # quietly apply a wrong update.
    return _global_mean(total, b, axis_name) * jnp.where(overflow, jnp.nan, 1.0).astype(dtype)


# ----------------------------------------------------------------------------------------------
# Tiles: each returns the (unnormalised) loss sum of all local rows against one tile of rows.


def _sigmoid_tile(local: dict, tile: dict) -> jax.Array:
    t = tile["t"] * _inv_norm(jnp.sum(tile["t"] * tile["t"], axis=-1))[:, None]
    z = local["scale"] * (local["x"] @ t.T) + local["bias"]  # [b, c]
    positive = local["ids"][:, None] == tile["ids"][None, :]
    return jnp.sum(jax.nn.softplus(jnp.where(positive, -z, z)))


def _pair_weights(a: jax.Array, b: jax.Array, uw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Weights of the positive and negative terms for label pairs `(a, b)` (broadcast)."""
    pa, na, ua = a == 1, a == -1, a == 0
    pb, nb, ub = b == 1, b == -1, b == 0
    w_pos = (pa & pb).astype(uw.dtype)
    w_neg = ((pa & nb) | (na & pb)).astype(uw.dtype) + uw * ((pa & ub) | (ua & pb))
    return w_pos, w_neg


def _conditional_terms(z, w_pos, w_neg) -> jax.Array:
    # softplus(-z) = softplus(z) - z saves a transcendental per element.
    return jnp.sum((w_pos + w_neg) * jax.nn.softplus(z) - w_pos * z)


def _dense_tile(local: dict, tile: dict) -> jax.Array:
    """All local images × a caption tile × every concept, one chunk of concepts at a time."""
    x, t = local["x"], tile["t"]
    n_chunks, kc, _ = local["g2"].shape
    lab_t = tile["lab"].reshape(t.shape[0], n_chunks, kc).transpose(1, 0, 2)  # [n, c, kc]

    def chunk(xs):
        g2, a, b = xs  # [kc, D], [bi, kc], [c, kc]
        inv_x = _inv_norm((x * x) @ g2.T).T  # [kc, bi]
        inv_t = _inv_norm((t * t) @ g2.T).T  # [kc, c]
        num = (x[None, :, :] * g2[:, None, :]) @ t.T  # [kc, bi, c]: one matmul per concept
        z = local["scale"] * num * inv_x[:, :, None] * inv_t[:, None, :] + local["bias"]
        w_pos, w_neg = _pair_weights(a.T[:, :, None], b.T[:, None, :], local["uw"])
        return _conditional_terms(z, w_pos, w_neg)

    return _scan_sum(chunk, (local["g2"], local["lab"], lab_t), x.dtype, (local, tile))


def _sparse_tile(local: dict, tile: dict, *, chunk_rows: int) -> jax.Array:
    """Present entries of the local rows × a tile of rows, both directions.

    Part 1: image entries `(i, k)` with `L[i,k] = +1` against the tile's captions `j`.
    Part 2: caption entries `(j, k)` with `L[j,k] = +1` against the tile's images `i`, for
    `L[i,k] ≠ +1` only (the `(+1, +1)` triples were counted by part 1). In both, the other
    side's label is `L_tile[j, k_e]`, so the two parts share their weights. Local rows are
    taken `chunk_rows` at a time so that their gated entries `[chunk_rows·R, D]` stay small.
    """
    g2 = local["g2"]
    per_concept = {  # [K, c]: everything about the tile that entries look up by concept
        "lab": tile["lab"].T,
        "inv_t": _inv_norm(g2 @ (tile["t"] * tile["t"]).T),
        "inv_x": _inv_norm(g2 @ (tile["x"] * tile["x"]).T),
    }

    def rows_term(rows):  # x, t [e, D]; gidx, valid [e, R]
        r = rows["gidx"].shape[1]
        gidx = rows["gidx"].reshape(-1)
        gates = g2[gidx]  # [E, D], E = e·R
        w_pos, w_neg = _pair_weights(per_concept["lab"][gidx], jnp.int8(1), local["uw"])
        valid = rows["valid"].reshape(-1, 1).astype(w_pos.dtype)
        w_pos, w_neg = w_pos * valid, w_neg * valid

        def logits(v_local, v_tile, inv_tile):  # entries of one side × tile rows of the other
            v = jnp.repeat(v_local, r, axis=0)
            u = v * gates
            inv_u = _inv_norm(jnp.sum(u * v, axis=-1))
            num = u @ v_tile.T  # [E, c]
            return local["scale"] * num * inv_u[:, None] * inv_tile[gidx] + local["bias"]

        z_img = logits(rows["x"], tile["t"], per_concept["inv_t"])
        z_txt = logits(rows["t"], tile["x"], per_concept["inv_x"])
        return _conditional_terms(z_img, w_pos, w_neg) + jnp.sum(w_neg * jax.nn.softplus(z_txt))

    rows = {name: local[name] for name in ("x", "t", "gidx", "valid")}
    return _scan_sum(rows_term, _split_rows(rows, chunk_rows), g2.dtype, (local, tile))


# ----------------------------------------------------------------------------------------------
# The two conditional paths: local precomputation, then the (ring) sum over tiles.


def _dense_sum(x, t, g2, labels, consts, axis_name) -> jax.Array:
    b, d = x.shape
    k = g2.shape[0]
    tile_rows = _divisor_at_most(b, _TILE_ELEMENTS // b)
    kc = max(1, min(k, _TILE_ELEMENTS // (b * tile_rows)))
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
    return _ring_sum(_dense_tile, tile_rows, axis_name, x.dtype, local, block)


def _sparse_sum(x, t, g2, labels, consts, max_present, axis_name):
    b, d = x.shape
    k = g2.shape[0]
    r = min(max_present, k)
    gidx, valid, overflow = _present_slots(labels, max_present, r)
    local = {"x": x, "t": t, "gidx": gidx, "valid": valid, "g2": g2, **consts}
    block = {"x": x, "t": t, "lab": labels}
    # Tiles of the visiting rows bound the [K, c] per-concept tables; chunks of local rows
    # bound the [e·R, c] logits and the [e·R, D] gated entries.
    tile_rows = _divisor_at_most(b, min(256, _TILE_ELEMENTS // k))
    chunk_rows = _divisor_at_most(b, _TILE_ELEMENTS // (2 * r * max(tile_rows, d)))
    tile_fn = functools.partial(_sparse_tile, chunk_rows=chunk_rows)
    return _ring_sum(tile_fn, tile_rows, axis_name, x.dtype, local, block), overflow


def _present_slots(labels: jax.Array, max_present: int, r: int):
    """Column indices of each row's `+1` entries, `[b, r]`, their validity, and overflow.

    The n-th present concept of a row is where the row's running count of `+1`s first reaches
    n: `r` passes of O(b·K), where `lax.top_k` would sort every row on CPU.
    """
    present = labels == 1
    # 1, 2, ... at each +1. int16 halves the largest [b, K] temporary; K < 2^15 keeps it exact.
    rank_dtype = jnp.int16 if labels.shape[1] < 2**15 else jnp.int32
    rank = jnp.cumsum(present, axis=1, dtype=rank_dtype) * present
    hits = [rank == n for n in range(1, r + 1)]
    gidx = jnp.stack([jnp.argmax(h, axis=1) for h in hits], axis=1).astype(jnp.int32)
    valid = jnp.stack([jnp.any(h, axis=1) for h in hits], axis=1)
    overflow = jnp.any(rank > max_present)
    return gidx, valid, overflow


# ----------------------------------------------------------------------------------------------
# Tiled sums and the ring.

TileFn = Callable[[dict, dict], jax.Array]


def _tiled_sum(tile_fn: TileFn, tile_rows: int, dtype, local: Any, block: Any) -> jax.Array:
    """`Σ_tiles tile_fn(local, tile)` over row tiles of `block`, each tile rematerialised."""
    tiles = _split_rows(block, tile_rows)
    return _scan_sum(lambda tile: tile_fn(local, tile), tiles, dtype, (local, block))


def _scan_sum(fn: Callable[[Any], jax.Array], xs: Any, dtype, like: Any) -> jax.Array:
    """`Σ_s fn(xs[s])` over the leading axis of the pytree `xs`, each term rematerialised.

    `like` is what the terms depend on: inside `shard_map` the accumulator must start
    device-varying over the same axes (a scan carry keeps one type).
    """
    fn = jax.checkpoint(fn)
    n = jax.tree.leaves(xs)[0].shape[0]
    if n == 1:
        return fn(jax.tree.map(lambda a: a[0], xs))
    total, _ = lax.scan(lambda acc, x: (acc + fn(x), None), _zero_sum(dtype, like), xs)
    return total


def _split_rows(tree: Any, rows: int) -> Any:
    """Reshapes every leaf `[n·rows, ...]` to `[n, rows, ...]`."""
    return jax.tree.map(lambda a: a.reshape(a.shape[0] // rows, rows, *a.shape[1:]), tree)


def _ring_sum(tile_fn, tile_rows, axis_name, dtype, local, block) -> jax.Array:
    """This device's share of the loss sum: its `local` rows against every row of the batch.

    Unsharded, `block` holds every row. Sharded, `block` holds this device's rows, and the
    blocks of all devices visit each device in turn.
    """
    if axis_name is None:
        return _tiled_sum(tile_fn, tile_rows, dtype, local, block)
    return _ring(tile_fn, tile_rows, _axes(axis_name), dtype, local, block)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _ring(tile_fn, tile_rows, axes, dtype, local, block):
    return _ring_fwd(tile_fn, tile_rows, axes, dtype, local, block)[0]


def _ring_fwd(tile_fn, tile_rows, axes, dtype, local, block):
    block_sum = functools.partial(_tiled_sum, tile_fn, tile_rows, dtype)
    total = block_sum(local, block)

    def step(carry, _):
        visitor, total = carry
        visitor = _shift(visitor, axes)
        return (visitor, total + block_sum(local, visitor)), None

    (_, total), _ = lax.scan(step, (block, total), length=lax.axis_size(axes) - 1)
    return total, (local, block)


def _ring_bwd(tile_fn, tile_rows, axes, dtype, residuals, ct):
    """Runs the ring again; each visiting block's gradient travels with it and ends at home."""
    local, block = residuals
    block_sum = functools.partial(_tiled_sum, tile_fn, tile_rows, dtype)
    ct = _pvary(ct, axes)
    l_float, l_other, l_merge = _split_float(local)
    # Replicated inputs (gates, scale, bias) are made device-varying so that each step's
    # cotangent stays a local partial sum; one psum at the end replaces a psum per step.
    invariant = [tuple(a for a in axes if a not in _varying_axes(v)) for v in l_float]
    l_float = [_pvary(v, axes) for v in l_float]

    def grads(visitor):
        v_float, v_other, v_merge = _split_float(visitor)
        f = lambda lf, vf: block_sum(l_merge(lf, l_other), v_merge(vf, v_other))
        return jax.vjp(f, l_float, v_float)[1](ct)

    d_local, d_visitor = grads(block)

    def step(carry, _):
        visitor, d_visitor, d_local = carry
        visitor, d_visitor = _shift((visitor, d_visitor), axes)
        dl, dv = grads(visitor)
        return (visitor, _add(d_visitor, dv), _add(d_local, dl)), None

    carry = (block, d_visitor, d_local)
    (_, d_visitor, d_local), _ = lax.scan(step, carry, length=lax.axis_size(axes) - 1)
    d_block = _shift(d_visitor, axes)  # the last hop brings every block's gradient home
    d_local = [lax.psum(d, inv) if inv else d for d, inv in zip(d_local, invariant, strict=True)]
    _, b_other, b_merge = _split_float(block)
    return l_merge(d_local, [None] * len(l_other)), b_merge(d_block, [None] * len(b_other))


_ring.defvjp(_ring_fwd, _ring_bwd)


# ----------------------------------------------------------------------------------------------
# Small helpers.


def _check_pair(image_emb, text_emb, axis_name: AxisName) -> tuple[jax.Array, jax.Array]:
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            "image_emb and text_emb must both be [B, D] with the same B and D, got "
            f"{image_emb.shape} and {text_emb.shape}"
        )
    if axis_name is not None and not set(_axes(axis_name)) <= _varying_axes(image_emb):
        raise ValueError(
            f"axis_name={axis_name!r}, but image_emb is not split over that mesh axis: call the "
            "loss inside jax.shard_map (check_vma=True) with the batch split along it."
        )
    dtype = jnp.promote_types(jnp.result_type(image_emb, text_emb), jnp.float32)
    return image_emb.astype(dtype), text_emb.astype(dtype)


def _scalars(dtype, **values) -> dict[str, jax.Array]:
    out = {}
    for name, v in values.items():
        v = jnp.asarray(v, dtype)
        if v.size != 1:
            raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
        out[name] = v.reshape(())
    return out


def _inv_norm(sq: jax.Array) -> jax.Array:
    # 1 / max(sqrt(sq), ε) written as rsqrt(max(sq, ε²)): same value, finite gradient at 0.
    return lax.rsqrt(jnp.maximum(sq, EPS * EPS))


def _divisor_at_most(n: int, cap: int) -> int:
    """Largest divisor of `n` not above `cap` (at least 1): tiles must split rows exactly."""
    cap = max(1, min(n, cap))
    return next(c for c in range(cap, 0, -1) if n % c == 0)


def _axes(axis_name: AxisName) -> tuple[str, ...]:
    return (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)


def _varying_axes(x) -> frozenset:
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return manual.varying if manual is not None else frozenset()


def _zero_sum(dtype, tree) -> jax.Array:
    """A scalar 0 accumulator, device-varying wherever the summed terms are (a scan carry that
    starts as a constant must already have the type of the body's output)."""
    varying = set().union(*(_varying_axes(a) for a in jax.tree.leaves(tree)))
    zero = jnp.zeros((), dtype)
    return lax.pcast(zero, tuple(sorted(varying)), to="varying") if varying else zero


def _pvary(x, axes: tuple[str, ...]):
    missing = tuple(a for a in axes if a not in _varying_axes(x))
    return lax.pcast(x, missing, to="varying") if missing else x


def _block_offset(b: int, axis_name: AxisName):
    return 0 if axis_name is None else lax.axis_index(_axes(axis_name)) * b


def _global_mean(total: jax.Array, b: int, axis_name: AxisName) -> jax.Array:
    if axis_name is None:
        return total / b
    axes = _axes(axis_name)
    return lax.psum(total, axes) / (b * lax.axis_size(axes))


def _shift(tree, axes: tuple[str, ...]):
    n = lax.axis_size(axes)
    return lax.ppermute(tree, axes, [(i, (i + 1) % n) for i in range(n)])


def _add(xs: list, ys: list) -> list:
    return [x + y for x, y in zip(xs, ys, strict=True)]


def _split_float(tree) -> tuple[list, list, Callable[[list, list], Any]]:
    """Splits a pytree's leaves into floating (differentiable) and other leaves, and a merger."""
    leaves, treedef = jax.tree.flatten(tree)
    is_float = [jnp.issubdtype(leaf.dtype, jnp.inexact) for leaf in leaves]

    def merge(floats: list, others: list):
        fi, oi = iter(floats), iter(others)
        return treedef.unflatten([next(fi) if f else next(oi) for f in is_float])

    floats = [leaf for leaf, f in zip(leaves, is_float, strict=True) if f]
    others = [leaf for leaf, f in zip(leaves, is_float, strict=True) if not f]
    return floats, others, merge
