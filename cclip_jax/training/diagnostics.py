"""What the train step logs about the conditional term besides its loss: triple counts and the
gated logits. Pure `jax.numpy`, computed inside the jitted step on a few rows."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cclip_jax.losses import EPS

METRIC_ROWS = 16  # rows of the batch the gated-logit diagnostics look at (cheap, m x m x K)


def triple_counts(labels: jax.Array) -> dict[str, jax.Array]:
    """Counts of conditional (image, caption, concept) triples by kind, from `labels [B, K]`."""
    pos = jnp.sum(labels == 1, axis=0).astype(jnp.float32)
    neg = jnp.sum(labels == -1, axis=0).astype(jnp.float32)
    unk = jnp.sum(labels == 0, axis=0).astype(jnp.float32)
    return {
        "triples_pos": jnp.sum(pos * pos),
        "triples_neg": jnp.sum(2 * pos * neg),
        "triples_unknown": jnp.sum(2 * pos * unk),
    }


def gate_diagnostics(
    x: jax.Array, t: jax.Array, c: jax.Array, labels: jax.Array, scale: jax.Array, bias: jax.Array
) -> dict[str, jax.Array]:
    """Mean gated logit of positive and negative triples on 16 rows, and the entropy of
    the normalised squared gate `p = c² / Σ c²` over `D` (divided by `log D`; 1 = uniform, what
    a gate that learned nothing collapses to), averaged over concepts with a `+1`.

    `x`, `t`: `[B, D]`; `c`: `[K, D]`; `labels`: `[B, K]`.
    """
    # Rows spread over the batch: a curated batch keeps neighbours together, so its first rows
    # share all their concepts and hold no negative triple at all.
    rows = jnp.linspace(0, x.shape[0] - 1, min(METRIC_ROWS, x.shape[0])).astype(jnp.int32)
    x, t, lab = x[rows], t[rows], labels[rows].astype(jnp.int32)
    g2 = jnp.square(c)
    num = jnp.einsum("id,jd,kd->ijk", x, t, g2)
    nx = jnp.sqrt(jnp.maximum(jnp.square(x) @ g2.T, EPS**2))  # [m, K]
    nt = jnp.sqrt(jnp.maximum(jnp.square(t) @ g2.T, EPS**2))
    z = scale * num / (nx[:, None, :] * nt[None, :, :]) + bias
    a, b = lab[:, None, :], lab[None, :, :]
    pos = (a == 1) & (b == 1)
    neg = ((a == 1) & (b != 1)) | ((a != 1) & (b == 1))

    def mean(mask):
        return jnp.sum(jnp.where(mask, z, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    p = g2 / jnp.maximum(jnp.sum(g2, axis=-1, keepdims=True), 1e-30)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    present = jnp.any(labels == 1, axis=0)
    ent = jnp.sum(jnp.where(present, ent, 0.0)) / jnp.maximum(jnp.sum(present), 1)
    return {
        "logit_pos": mean(pos),
        "logit_neg": mean(neg),
        "gate_entropy": ent / jnp.log(c.shape[-1]),
    }
