"""What a conditional triple counts for: the weights of a label pair, and its loss terms.

Shared by every form of the conditional loss (dense, support-bounded, pooled).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cclip_jax.losses import _engine as E

SCALARS = ("scale", "bias", "uw", "beta")
"""The scalar consts every tile receives: logit scale and bias, unknown and cross-positive
weights."""


def _pair_weights(
    a: jax.Array, b: jax.Array, uw: jax.Array, beta: jax.Array
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


def check_concepts(concept_emb, concept_labels, b: int, d: int) -> int:
    """Checks `concept_emb [K, D]` and integer `concept_labels [B, K]`; returns K."""
    if concept_emb is not None and (concept_emb.ndim != 2 or concept_emb.shape[1] != d):
        raise ValueError(f"concept_emb must be [K, D={d}], got shape {concept_emb.shape}")
    k = concept_labels.shape[-1] if concept_emb is None else concept_emb.shape[0]
    if concept_labels.shape != (b, k):
        raise ValueError(f"concept_labels must be [B={b}, K={k}], got {concept_labels.shape}")
    if not jnp.issubdtype(concept_labels.dtype, jnp.integer):
        raise ValueError(f"concept_labels must be integer (int8), got {concept_labels.dtype}")
    return k
