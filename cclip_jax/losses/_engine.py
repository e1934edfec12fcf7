"""The engine under both losses: tiled sums with forward-computed gradients, and the ring.

A loss is written as a *tile function* `tile_fn(local, tile) -> scalar`: the loss sum of this
device's rows (`local`) against one tile of rows of the batch. `ring_sum` adds it up over every
row of the batch: unsharded, over the row tiles of the whole batch; sharded, over the tiles of
each device's block as the blocks travel once round a ring of `ppermute`s, each with its
gradient. No device keeps the visiting blocks for autodiff.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

EPS = 1e-6
"""`ε` of the cosine: `cos(u, v) = u·v / (max(‖u‖, ε)·max(‖v‖, ε))`."""

# Elements of the largest per-tile temporary (4M f32 = 16 MiB). Every path sizes its tiles so
# that one tile's logits stay below it; peak memory is a small multiple of this.
TILE_ELEMENTS = 1 << 22

AxisName = str | tuple[str, ...] | None

# ----------------------------------------------------------------------------------------------
# Sums whose gradient is computed on the way forward.
#
# Every sum here is a scalar loss, whose gradient is linear in the output cotangent. So each
# term's gradient is computed in the forward pass (at cotangent 1) and accumulated, and the
# backward pass only scales it. Nothing is recomputed (as remat would do) and nothing but
# input-sized gradients outlives a term, and the ring is travelled once, not twice. When no
# gradient is asked for, the plain primal runs and computes no gradients at all.

TileFn = Callable[[Any, Any], jax.Array]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def scan_sum(fn: TileFn, dtype, consts: Any, xs: Any) -> jax.Array:
    """`Σ_s fn(consts, xs[s])` over the leading axis of the pytree `xs`.

    `consts` is shared by every term; `xs` leaves are `[n, ...]`. Non-float leaves (indices,
    labels) get no gradient.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    if n == 1:
        return fn(consts, _first(xs))
    body = lambda acc, x: (acc + fn(consts, x), None)
    return lax.scan(body, zero_sum(dtype, (consts, xs)), xs)[0]


def _scan_sum_fwd(fn, dtype, consts, xs):
    axes = _all_varying_axes((consts, xs))
    value_and_grads = _term_value_and_grads(fn, consts, axes)
    n = jax.tree.leaves(xs)[0].shape[0]
    if n == 1:
        total, d_consts, d_x = value_and_grads(_first(xs))
        d_xs = [d[None] for d in d_x]
    else:

        def step(carry, x):
            total, d_consts = carry
            value, dc, dx = value_and_grads(x)
            return (total + value, _add(d_consts, dc)), dx

        d_consts0 = [_pvary(jnp.zeros_like(c), axes) for c in _split_float(consts)[0]]
        init = (zero_sum(dtype, (consts, xs)), d_consts0)
        (total, d_consts), d_xs = lax.scan(step, init, xs)
    return total, (consts, xs, d_consts, d_xs)


def _scan_sum_bwd(fn, dtype, residuals, ct):
    consts, xs, d_consts, d_xs = residuals
    return _scaled(consts, d_consts, ct), _scaled(xs, d_xs, ct)


scan_sum.defvjp(_scan_sum_fwd, _scan_sum_bwd)


def ring_sum(tile_fn: TileFn, tile_rows: int, axis_name, dtype, local, block) -> jax.Array:
    """This device's share of the loss sum: its `local` rows against every row of the batch.

    `tile_fn(local, tile)` is the loss sum of the local rows against a tile of `tile_rows`
    rows. Unsharded, `block` holds every row of the batch. Sharded (`axis_name`), `block` holds
    this device's rows, and the blocks of all devices visit each device in turn.
    """
    if axis_name is None:
        return scan_sum(tile_fn, dtype, local, split_rows(block, tile_rows))
    return _ring(tile_fn, tile_rows, axis_tuple(axis_name), dtype, local, block)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _ring(tile_fn, tile_rows, axes, dtype, local, block):
    block_sum = lambda visitor: scan_sum(tile_fn, dtype, local, split_rows(visitor, tile_rows))

    def step(carry, _):
        visitor, total = carry
        visitor = _shift(visitor, axes)
        return (visitor, total + block_sum(visitor)), None

    carry = (block, block_sum(block))
    return lax.scan(step, carry, length=lax.axis_size(axes) - 1)[0][1]


def _ring_fwd(tile_fn, tile_rows, axes, dtype, local, block):
    """One trip round the ring; each visiting block's gradient travels with it back home."""
    block_sum = lambda lc, visitor: scan_sum(tile_fn, dtype, lc, split_rows(visitor, tile_rows))
    value_and_grads = _term_value_and_grads(block_sum, local, axes)
    total, d_local, d_visitor = value_and_grads(block)

    def step(carry, _):
        visitor, d_visitor, total, d_local = carry
        visitor, d_visitor = _shift((visitor, d_visitor), axes)
        value, dl, dv = value_and_grads(visitor)
        return (visitor, _add(d_visitor, dv), total + value, _add(d_local, dl)), None

    carry = (block, d_visitor, total, d_local)
    (_, d_visitor, total, d_local), _ = lax.scan(step, carry, length=lax.axis_size(axes) - 1)
    d_block = _shift(d_visitor, axes)  # the last hop brings every block's gradient home
    return total, (local, block, d_local, d_block)


def _ring_bwd(tile_fn, tile_rows, axes, dtype, residuals, ct):
    local, block, d_local, d_block = residuals
    return _scaled(local, d_local, ct), _scaled(block, d_block, ct)


_ring.defvjp(_ring_fwd, _ring_bwd)


def _term_value_and_grads(fn: TileFn, consts: Any, axes: tuple[str, ...]):
    """`x ↦ (fn(consts, x), d/d float(consts), d/d float(x))`, as lists of float leaves.

    Replicated float `consts` (gates, scale, bias) are first made device-varying, so that each
    term's gradient is a local partial sum: one psum at the end (`_scaled`) replaces one per
    term that autodiff would insert.
    """
    c_float, c_other, c_merge = _split_float(consts)
    c_float = [_pvary(c, axes) for c in c_float]

    def value_and_grads(x):
        x_float, x_other, x_merge = _split_float(x)
        f = lambda cf, xf: fn(c_merge(cf, c_other), x_merge(xf, x_other))
        value, (dc, dx) = jax.value_and_grad(f, argnums=(0, 1))(c_float, x_float)
        return value, dc, dx

    return value_and_grads


def _scaled(primals: Any, grads: list, ct: jax.Array) -> Any:
    """Cotangents `ct · grads` shaped like `primals` (None for non-float leaves), summed over
    the mesh axes where a primal leaf is replicated but its gradient is a per-device part."""
    floats, others, merge = _split_float(primals)
    out = []
    for primal, grad in zip(floats, grads, strict=True):
        grad = grad * ct.astype(grad.dtype)
        replicated = tuple(sorted(_varying_axes(grad) - _varying_axes(primal)))
        out.append((lax.psum(grad, replicated) if replicated else grad).astype(primal.dtype))
    return merge(out, [None] * len(others))


def split_rows(tree: Any, rows: int) -> Any:
    """Reshapes every leaf `[n·rows, ...]` to `[n, rows, ...]`."""
    return jax.tree.map(lambda a: a.reshape(a.shape[0] // rows, rows, *a.shape[1:]), tree)


def _first(xs: Any) -> Any:
    return jax.tree.map(lambda a: a[0], xs)


# ----------------------------------------------------------------------------------------------
# Small helpers.


@jax.custom_jvp
def softplus(z: jax.Array) -> jax.Array:
    """`log(1 + e^z)`, whose derivative `sigmoid(z)` reuses the same `e^{-|z|}`: one exp per
    logit for value and gradient instead of two (transcendentals are much of a tile on CPU)."""
    return jnp.maximum(z, 0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    e = jnp.exp(-jnp.abs(z))
    sigmoid = jnp.where(z >= 0, 1.0, e) / (1.0 + e)
    return jnp.maximum(z, 0) + jnp.log1p(e), sigmoid * dz


def check_pair(image_emb, text_emb, axis_name: AxisName) -> tuple[jax.Array, jax.Array]:
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            "image_emb and text_emb must both be [B, D] with the same B and D, got "
            f"{image_emb.shape} and {text_emb.shape}"
        )
    if axis_name is not None and not set(axis_tuple(axis_name)) <= _varying_axes(image_emb):
        raise ValueError(
            f"axis_name={axis_name!r}, but image_emb is not split over that mesh axis: call the "
            "loss inside jax.shard_map (check_vma=True) with the batch split along it."
        )
    dtype = jnp.promote_types(jnp.result_type(image_emb, text_emb), jnp.float32)
    return jnp.asarray(image_emb, dtype), jnp.asarray(text_emb, dtype)


def scalars(dtype, **values) -> dict[str, jax.Array]:
    out = {}
    for name, v in values.items():
        v = jnp.asarray(v, dtype)
        if v.size != 1:
            raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
        out[name] = v.reshape(())
    return out


def inv_norm(sq: jax.Array) -> jax.Array:
    # 1 / max(sqrt(sq), ε) written as rsqrt(max(sq, ε²)): same value, finite gradient at 0.
    return lax.rsqrt(jnp.maximum(sq, EPS * EPS))


def divisor_at_most(n: int, cap: int) -> int:
    """Largest divisor of `n` not above `cap` (at least 1): tiles must split rows exactly."""
    cap = max(1, min(n, cap))
    return next(c for c in range(cap, 0, -1) if n % c == 0)


def axis_tuple(axis_name: AxisName) -> tuple[str, ...]:
    return (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)


def _varying_axes(x) -> frozenset:
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return manual.varying if manual is not None else frozenset()


def zero_sum(dtype, tree) -> jax.Array:
    """A scalar 0 accumulator, device-varying wherever the summed terms are (a scan carry that
    starts as a constant must already have the type of the body's output)."""
    return _pvary(jnp.zeros((), dtype), _all_varying_axes(tree))


def _all_varying_axes(tree) -> tuple[str, ...]:
    return tuple(sorted(set().union(*(_varying_axes(a) for a in jax.tree.leaves(tree)))))


def _pvary(x, axes: tuple[str, ...]):
    missing = tuple(a for a in axes if a not in _varying_axes(x))
    return lax.pcast(x, missing, to="varying") if missing else x


def block_offset(b: int, axis_name: AxisName):
    return 0 if axis_name is None else lax.axis_index(axis_tuple(axis_name)) * b


def global_mean(total: jax.Array, b: int, axis_name: AxisName) -> jax.Array:
    if axis_name is None:
        return total / b
    axes = axis_tuple(axis_name)
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
