"""Initial logit biases from the batch's statistics (numpy only: they are computed once).

A sigmoid loss whose bias starts at the logit of its positive rate starts with a balanced
gradient: `Σ (σ(z) - y) = 0` at `z = bias` for every pair. SigLIP's `bias = -10` is about
`logit(1 / 32k)`, the rate of its batch of 32k; at B = 64 it holds every logit far below the
positives' rate, and Adam moves a scalar by about the learning rate per step, so it stays there.
"""

from __future__ import annotations

import math

import numpy as np

TRIPLE_SUMS = ("pp", "p", "pn", "pu")
"""Keys of `triple_sums`: `Σ_k P_k²`, `Σ_k P_k`, `Σ_k P_k·N_k`, `Σ_k P_k·U_k` over batches."""


def logit(p: float) -> float:
    """`log(p / (1 - p))` for `0 < p < 1`."""
    if not 0 < p < 1:
        raise ValueError(f"a rate must be in (0, 1), got {p}")
    return math.log(p / (1 - p))


def sigmoid_bias_init(batch_size: int) -> float:
    """`logit(1 / B) = -log(B - 1)`: the plain term's positive rate (one caption in B).

    Example:
      >>> round(sigmoid_bias_init(64), 4)
      -4.1431
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    return logit(1.0 / batch_size)


def triple_sums(labels: np.ndarray) -> dict[str, int]:
    """Per-column label products of one batch, `labels [B, K]` (+1/-1/0), summed over `K`.

    Sums over many batches are what `conditional_bias_init` needs: the counted triples of a
    batch are `Σ_k β·P_k² + (1 - β)·P_k + 2·P_k·N_k + 2·uw·P_k·U_k`.

    Example:
      >>> sums = triple_sums(np.array([[1, -1], [1, 0], [-1, 1]]))
      >>> sums
      {'pp': 5, 'p': 3, 'pn': 3, 'pu': 1}
      >>> round(conditional_bias_init(sums, unknown_weight=0.5), 4)  # log(5 / (2·3 + 2·0.5·1))
      -0.3365
    """
    labels = np.asarray(labels)
    p, n, u = ((labels == v).sum(axis=0).astype(np.int64) for v in (1, -1, 0))
    return {"pp": int(p @ p), "p": int(p.sum()), "pn": int(p @ n), "pu": int(p @ u)}


def positive_triple_rate(
    sums: dict[str, float], *, unknown_weight: float = 1.0, cross_positive_weight: float = 1.0
) -> float:
    """The weighted share of positives among the counted triples (`triple_sums` over batches)."""
    missing = [k for k in TRIPLE_SUMS if k not in sums]
    if missing:
        raise ValueError(f"triple sums lack {missing}")
    beta = cross_positive_weight
    pos = beta * sums["pp"] + (1 - beta) * sums["p"]
    neg = 2 * sums["pn"] + 2 * unknown_weight * sums["pu"]
    if pos <= 0 or neg <= 0:
        raise ValueError(f"no positive or no negative triples in {dict(sums)}")
    return pos / (pos + neg)


def conditional_bias_init(
    sums: dict[str, float], *, unknown_weight: float = 1.0, cross_positive_weight: float = 1.0
) -> float:
    """`logit` of `positive_triple_rate`: the conditional term's balanced starting bias."""
    return logit(
        positive_triple_rate(
            sums, unknown_weight=unknown_weight, cross_positive_weight=cross_positive_weight
        )
    )
