"""Transformer building blocks shared by the image and the text tower.

Module and parameter names follow big_vision (`MultiHeadDotProductAttention_0/query/kernel`,
`MlpBlock_0/Dense_0`, `encoderblock_3`, `encoder_norm`, `MAPHead_0/probe`, ...) so that a
big_vision checkpoint maps onto this tree one to one (see `siglip_npz.py`).

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`, `layers`)
and every large activation a logical constraint (`batch`, `act_seq`, `act_embed`, `act_mlp`,
`act_heads`, `act_kv`); `cclip_jax.sharding` maps them to mesh axes. Parameters are float32;
matmuls and activations run in `dtype` (e.g. bfloat16); softmax and LayerNorm statistics stay
float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
DType = Any

# Why a named table instead of getattr(jax.checkpoint_policies, name): a typo in a config then
# fails with the list of choices, and "none" means "do not remat" rather than an AttributeError.
REMAT_POLICIES: dict[str, Callable[..., Any] | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}

# Large negative instead of -inf: a fully masked row (an all-padding concept) then softmaxes to
# a uniform distribution instead of NaN.
_MASK_VALUE = -1e9


def logical(init: Callable[..., Any], names: Sequence[str | None]) -> Callable[..., Any]:
    """Wraps an initializer so the parameter carries logical axis `names`."""
    return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: Array, names: Sequence[str | None]) -> Array:
    """Logical sharding constraint on an activation (a no-op without a mesh and rules)."""
    return nn.with_logical_constraint(x, tuple(names))


_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros_init()
_ones = nn.initializers.ones_init()
_small_normal = nn.initializers.normal(stddev=1e-6)


def layer_norm(dtype: DType, name: str | None = None) -> nn.LayerNorm:
    """Pre-LN LayerNorm with big_vision's epsilon and logical names on scale/bias `[D]`."""
    return nn.LayerNorm(
        epsilon=1e-6,
        dtype=dtype,
        scale_init=logical(_ones, ("embed",)),
        bias_init=logical(_zeros, ("embed",)),
        name=name,
    )


class MlpBlock(nn.Module):
    """Feed-forward block `[B, L, D] -> [B, L, D]` with a GELU hidden layer of `mlp_dim`."""

    mlp_dim: int
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        x = nn.Dense(
            self.mlp_dim,
            dtype=self.dtype,
            kernel_init=logical(_xavier, ("embed", "mlp")),
            bias_init=logical(_small_normal, ("mlp",)),
            name="Dense_0",
        )(x)
        x = constrain(nn.gelu(x), ("batch", "act_seq", "act_mlp"))
        return nn.Dense(
            d,
            dtype=self.dtype,
            kernel_init=logical(_xavier, ("mlp", "embed")),
            bias_init=logical(_small_normal, ("embed",)),
            name="Dense_1",
        )(x)


class HeadProjection(nn.Module):
    """An einsum projection with an explicit kernel layout (big_vision's `query`/.../`out`).

    Why not `nn.DenseGeneral`: it initialises a flattened 2-D kernel and reshapes it, which
    breaks logical partitioning under a mesh (the constraint sees the 2-D value).
    """

    equation: str  # e.g. "bld,dhk->blhk"
    kernel_shape: tuple[int, ...]
    kernel_names: tuple[str, ...]
    in_axes: tuple[int, ...]  # kernel axes that are contracted (xavier's fan-in)
    bias_names: tuple[str, ...]
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out_axes = tuple(i for i in range(len(self.kernel_shape)) if i not in self.in_axes)
        init = nn.initializers.xavier_uniform(in_axis=self.in_axes, out_axis=out_axes)
        kernel = self.param("kernel", logical(init, self.kernel_names), self.kernel_shape)
        bias_shape = tuple(self.kernel_shape[i] for i in out_axes)
        bias = self.param("bias", logical(_zeros, self.bias_names), bias_shape)
        y = jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


class Attention(nn.Module):
    """Multi-head dot-product attention with big_vision's parameter tree.

    `inputs_q [B, Lq, D]`, `inputs_kv [B, Lk, D]`, optional `kv_mask [B, Lk]` (True = attend)
    -> `[B, Lq, D]`. Kernels are `query/key/value: [D, H, D/H]`, `out: [H, D/H, D]`.
    """

    num_heads: int
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, inputs_q: Array, inputs_kv: Array, kv_mask: Array | None = None) -> Array:
        d = inputs_q.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        head_dim = d // self.num_heads

        def project(name: str, x: Array) -> Array:
            y = HeadProjection(
                "bld,dhk->blhk",
                (d, self.num_heads, head_dim),
                ("embed", "heads", "kv"),
                in_axes=(0,),
                bias_names=("heads", "kv"),
                dtype=self.dtype,
                name=name,
            )(x)
            return constrain(y, ("batch", "act_seq", "act_heads", "act_kv"))

        q = project("query", inputs_q)
        k = project("key", inputs_kv)
        v = project("value", inputs_kv)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        logits = logits / jnp.sqrt(jnp.float32(head_dim))
        if kv_mask is not None:
            logits = jnp.where(kv_mask[:, None, None, :], logits, _MASK_VALUE)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        y = constrain(y, ("batch", "act_seq", "act_heads", "act_kv"))
        return HeadProjection(
            "blhk,hkd->bld",
            (self.num_heads, head_dim, d),
            ("heads", "kv", "embed"),
            in_axes=(0, 1),
            bias_names=("embed",),
            dtype=self.dtype,
            name="out",
        )(y)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block (self-attention + MLP), `[B, L, D] -> ([B, L, D], None)`.

    Returns a `(carry, None)` pair so the same class works unrolled and under `nn.scan`.
    """

    mlp_dim: int
    num_heads: int
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> tuple[Array, None]:
        y = layer_norm(self.dtype, "LayerNorm_0")(x)
        y = Attention(self.num_heads, self.dtype, name="MultiHeadDotProductAttention_0")(y, y, mask)
        x = constrain(x + y, ("batch", "act_seq", "act_embed"))
        y = layer_norm(self.dtype, "LayerNorm_1")(x)
        y = MlpBlock(self.mlp_dim, self.dtype, name="MlpBlock_0")(y)
        x = constrain(x + y, ("batch", "act_seq", "act_embed"))
        return x, None


class Encoder(nn.Module):
    """Stack of `depth` blocks plus the final `encoder_norm`, `[B, L, D] -> [B, L, D]`.

    `scan=True` stacks the blocks' parameters along a leading `layers` axis (one block is traced
    and compiled, so compile time does not grow with depth); the tree is then
    `encoderblock/...` instead of `encoderblock_0/...`, `encoderblock_1/...`.
    `remat_policy` (a key of `REMAT_POLICIES`) recomputes block activations in the backward pass.
    `mask [B, L]` (True = real token) keeps padding out of every attention.
    """

    depth: int
    mlp_dim: int
    num_heads: int
    dtype: DType = jnp.float32
    scan: bool = False
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"Unknown remat_policy {self.remat_policy!r}; known: {', '.join(REMAT_POLICIES)}"
            )
        block_cls: Any = EncoderBlock
        if self.remat_policy != "none":
            # prevent_cse is only needed outside scan; inside it, it would block XLA fusions.
            block_cls = nn.remat(
                block_cls, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=not self.scan
            )
        kw = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dtype=self.dtype)
        if self.scan:
            stack = nn.scan(
                block_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=nn.broadcast,
                length=self.depth,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = stack(**kw, name="encoderblock")(x, mask)
        else:
            for i in range(self.depth):
                x, _ = block_cls(**kw, name=f"encoderblock_{i}")(x, mask)
        return layer_norm(self.dtype, "encoder_norm")(x)


class MAPHead(nn.Module):
    """Multi-head attention pooling: a learned probe attends over `[B, L, D]` -> `[B, D]`.

    `query_offsets [Q, D]` adds `Q` more queries, `probe + query_offsets[q]`, pooled by the same
    weights in the same call (the keys and values are computed once): the output is then
    `[B, 1 + Q, D]`, the plain pooled token first (the pool arm's `x_{i|k}`).
    """

    mlp_dim: int
    num_heads: int
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(
        self, x: Array, mask: Array | None = None, query_offsets: Array | None = None
    ) -> Array:
        b, _, d = x.shape
        probe = self.param("probe", logical(_xavier, (None, None, "embed")), (1, 1, d))
        probe = probe.astype(self.dtype)
        queries = probe[0]  # [1, D]
        if query_offsets is not None:
            queries = jnp.concatenate([queries, probe[0] + query_offsets.astype(self.dtype)])
        queries = jnp.broadcast_to(queries[None], (b, *queries.shape))
        x = Attention(self.num_heads, self.dtype, name="MultiHeadDotProductAttention_0")(
            queries, x, mask
        )
        y = layer_norm(self.dtype, "LayerNorm_0")(x)
        x = x + MlpBlock(self.mlp_dim, self.dtype, name="MlpBlock_0")(y)
        return x[:, 0] if query_offsets is None else x


def projection(out_dim: int, dtype: DType, name: str = "head") -> nn.Dense:
    """The tower's output projection `[B, width] -> [B, out_dim]` (big_vision's `head`)."""
    return nn.Dense(
        out_dim,
        dtype=dtype,
        kernel_init=logical(_xavier, ("embed", "proj")),
        bias_init=logical(_zeros, ("proj",)),
        name=name,
    )
