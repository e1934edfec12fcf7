"""The image tower: a ViT with pooling and an optional projection to the shared width."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cclip_jax.models import layers

Array = jax.Array

POOL_TYPES = ("map", "gap", "tok")
POSEMB_TYPES = ("learn", "sincos2d")


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed 2-D sine-cosine position embeddings (MoCo v3), `[1, h*w, width]` float32.

    A quarter of the channels each for sin(x), cos(x), sin(y), cos(y) with geometric
    frequencies, so `width` must be a multiple of 4.
    """
    if width % 4:
        raise ValueError(f"sincos2d position embeddings need width % 4 == 0, got {width}")
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter) / max(quarter - 1, 1))
    ys, xs = np.mgrid[:h, :w]
    ang_y = ys.reshape(-1, 1) * omega[None]
    ang_x = xs.reshape(-1, 1) * omega[None]
    pe = np.concatenate([np.sin(ang_x), np.cos(ang_x), np.sin(ang_y), np.cos(ang_y)], axis=1)
    return pe[None].astype(np.float32)


class ImageEncoder(nn.Module):
    """ViT: `images [B, S, S, C]` (float, roughly in [-1, 1]) -> `[B, out_dim or width]`.

    Tree (big_vision names): `embedding` (patch conv), `pos_embedding [1, N, D]` (learned only),
    `cls` (pool `tok` only), `Transformer/...`, `MAPHead_0` (pool `map` only), `head`
    (when `out_dim` is set), `concept_query` (only when called with `concept_emb`).
    """

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int = 16
    image_size: int = 224
    channels: int = 3
    pool_type: str = "map"
    posemb: str = "learn"
    out_dim: int | None = None
    dtype: Any = jnp.float32
    scan: bool = False
    remat_policy: str = "none"

    def _check_input(self, images: Array) -> None:
        expected = (self.image_size, self.image_size, self.channels)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape [B, {self.image_size}, {self.image_size}, "
                f"{self.channels}] (config image_size={self.image_size}, "
                f"channels={self.channels}), got {tuple(images.shape)}"
            )
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise TypeError(
                f"images must be floating point [B, {self.image_size}, {self.image_size}, "
                f"{self.channels}], got dtype {images.dtype}"
            )

    @nn.compact
    def __call__(
        self, images: Array, concept_emb: Array | None = None, *, return_tokens: bool = False
    ) -> Any:
        """`images [B, S, S, C]` -> the pooled embedding `[B, out_dim or width]`.

        `concept_emb [K, D]` (pool `map` only; the pool arm): the MAP head also pools each
        image once per concept, with query `probe + W_q·ĉ_k` (`ĉ_k = c_k / ‖c_k‖`, `W_q` the
        Dense `concept_query` from D to the tower width, zero-initialised so that at init every
        `x_{i|k}` equals the plain `x_i`), and the call returns `(pooled [B, ·],
        cond [B, K, ·])`, both through the same `head`.
        `return_tokens`: also return the final (post-`encoder_norm`) patch tokens `[B, N, width]`
        the pooling attends over, last in the returned tuple.
        """
        self._check_input(images)
        if self.pool_type not in POOL_TYPES:
            raise ValueError(f"Unknown image pool_type {self.pool_type!r}; known: {POOL_TYPES}")
        p = self.patch_size
        # A VALID conv drops the last image_size % p pixels, as big_vision does (So400m/14 at
        # 384 px sees a 27x27 grid).
        x = nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            kernel_init=layers.logical(nn.initializers.lecun_normal(), (None, None, None, "embed")),
            bias_init=layers.logical(nn.initializers.zeros_init(), ("embed",)),
            name="embedding",
        )(images.astype(self.dtype))
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)

        if self.posemb == "learn":
            pos = self.param(
                "pos_embedding",
                layers.logical(nn.initializers.normal(stddev=d**-0.5), (None, None, "embed")),
                (1, h * w, d),
            )
        elif self.posemb == "sincos2d":
            pos = jnp.asarray(posemb_sincos_2d(h, w, d))
        else:
            raise ValueError(f"Unknown posemb {self.posemb!r}; known: {POSEMB_TYPES}")
        x = x + pos.astype(self.dtype)

        if self.pool_type == "tok":
            zeros = layers.logical(nn.initializers.zeros_init(), (None, None, "embed"))
            cls = self.param("cls", zeros, (1, 1, d))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, d)), x], axis=1)
        x = layers.constrain(x, ("batch", "act_seq", "act_embed"))

        x = layers.Encoder(
            depth=self.depth,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            dtype=self.dtype,
            scan=self.scan,
            remat_policy=self.remat_policy,
            name="Transformer",
        )(x)

        tokens = x[:, 1:] if self.pool_type == "tok" else x
        cond = None
        if concept_emb is not None:
            if self.pool_type != "map":
                raise ValueError(
                    "concept-conditioned pooling needs image pool_type 'map', got "
                    f"{self.pool_type!r}"
                )
            c = concept_emb.astype(jnp.float32)
            c = c * jax.lax.rsqrt(jnp.maximum(jnp.sum(c * c, axis=-1, keepdims=True), 1e-12))
            offsets = nn.Dense(
                d,
                use_bias=False,
                dtype=self.dtype,
                kernel_init=layers.logical(nn.initializers.zeros_init(), ("proj", "embed")),
                name="concept_query",
            )(c)  # [K, width]
            both = layers.MAPHead(self.mlp_dim, self.num_heads, self.dtype, name="MAPHead_0")(
                x, query_offsets=offsets
            )  # [B, 1 + K, width]
            x, cond = both[:, 0], both[:, 1:]
        elif self.pool_type == "map":
            x = layers.MAPHead(self.mlp_dim, self.num_heads, self.dtype, name="MAPHead_0")(x)
        elif self.pool_type == "gap":
            x = jnp.mean(x, axis=1)
        else:  # tok
            x = x[:, 0]
        if self.out_dim is not None:
            head = layers.projection(self.out_dim, self.dtype)
            x = head(x)
            cond = None if cond is None else head(cond)
        out = (layers.constrain(x, ("batch", "act_embed")),)
        if cond is not None:
            out += (layers.constrain(cond, ("batch", None, "act_embed")),)
        if return_tokens:
            out += (tokens,)
        return out[0] if len(out) == 1 else out
