"""The text tower: a transformer encoder over token ids, used for captions and concepts."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cclip_jax.models import layers

Array = jax.Array

POOL_TYPES = ("last", "first", "map", "gap")


class TokenEmbed(nn.Module):
    """Token embedding `[B, L]` int -> `[B, L, width]`, big_vision's `Embed_0/embedding`."""

    vocab_size: int
    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        init = nn.initializers.normal(stddev=self.width**-0.5)
        table = self.param(
            "embedding", layers.logical(init, ("vocab", "embed")), (self.vocab_size, self.width)
        )
        # Gather the FSDP shards of the table before the lookup: a gather from a table split
        # along `embed` yields rows split along `embed`, which SPMD can only turn into the
        # batch-split activation by replicating it. A `vocab` (tensor) split stays: a masked
        # local lookup plus one all-reduce.
        table = layers.constrain(table, ("vocab", None))
        x = jnp.take(table, tokens, axis=0).astype(self.dtype)
        return layers.constrain(x, ("batch", "act_seq", "act_embed"))


class TextEncoder(nn.Module):
    """Transformer encoder: `tokens [B, L]` int (L <= max_len) -> `[B, out_dim or width]`.

    Padding: with `mask_padding=True` (the default), tokens equal to `pad_id` are kept out of
    every attention and of the pooling, and `last` pools the last non-padding token, so a
    caption's embedding does not depend on how much padding follows it. Captions must be
    right-padded. With `mask_padding=False` the tower is big_vision's: no mask, and `last` reads
    position `L-1` (SigLIP pads with a "sticky" EOS, so that position holds an EOS); use this to
    reproduce a SigLIP checkpoint exactly.

    Tree (big_vision names): `Embed_0/embedding [vocab, D]`, `pos_embedding [1, max_len, D]`,
    `Encoder_0/...`, `MAPHead_0` (pool `map` only), `head` (when `out_dim` is set).
    """

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    vocab_size: int = 32_000
    max_len: int = 64
    pool_type: str = "last"
    pad_id: int = 0
    mask_padding: bool = True
    out_dim: int | None = None
    dtype: Any = jnp.float32
    scan: bool = False
    remat_policy: str = "none"

    def _check_input(self, tokens: Array) -> None:
        if tokens.ndim != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(
                f"text tokens must have shape [B, L] with L <= max_len={self.max_len}, "
                f"got {tuple(tokens.shape)}"
            )
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(
                f"text tokens must be an integer array [B, L<={self.max_len}] of ids in "
                f"[0, {self.vocab_size}), got dtype {tokens.dtype}"
            )

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        self._check_input(tokens)
        if self.pool_type not in POOL_TYPES:
            raise ValueError(f"Unknown text pool_type {self.pool_type!r}; known: {POOL_TYPES}")
        length = tokens.shape[1]
        x = TokenEmbed(self.vocab_size, self.width, self.dtype, name="Embed_0")(tokens)
        pos = self.param(
            "pos_embedding",
            layers.logical(nn.initializers.normal(stddev=self.width**-0.5), (None, None, "embed")),
            (1, self.max_len, self.width),
        )
        x = x + pos[:, :length].astype(self.dtype)
        x = layers.constrain(x, ("batch", "act_seq", "act_embed"))

        mask = tokens != self.pad_id if self.mask_padding else None
        x = layers.Encoder(
            depth=self.depth,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            dtype=self.dtype,
            scan=self.scan,
            remat_policy=self.remat_policy,
            name="Encoder_0",
        )(x, mask)

        if self.pool_type == "last":
            if mask is None:
                x = x[:, -1]
            else:
                # Index of the last real token; an all-padding row falls back to position 0.
                last = jnp.maximum(jnp.sum(mask, axis=1) - 1, 0)
                x = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
        elif self.pool_type == "first":
            x = x[:, 0]
        elif self.pool_type == "gap":
            if mask is None:
                x = jnp.mean(x, axis=1)
            else:
                w = mask.astype(x.dtype)[..., None]
                x = jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1)
        else:  # map
            x = layers.MAPHead(self.mlp_dim, self.num_heads, self.dtype, name="MAPHead_0")(x, mask)
        if self.out_dim is not None:
            x = layers.projection(self.out_dim, self.dtype)(x)
        return layers.constrain(x, ("batch", "act_embed"))
