"""An image × concept sigmoid classifier over the batch's concept labels (the `tags` control).

It uses the same labels and the same text tower as the conditional loss, but no caption–image
conditional pairs: a win of CCLIP over it would come from the pairs, not from the labels
(cf. SuperClass, CatLIP, TagAlign, which train image towers on tags alone).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cclip_jax.losses import _engine as E


def concept_sigmoid_loss(
    image_emb: jax.Array,
    concept_emb: jax.Array,
    concept_labels: jax.Array,
    *,
    scale: jax.Array | float,
    bias: jax.Array | float,
    unknown_weight: jax.Array | float = 1.0,
    axis_name: E.AxisName = None,
) -> jax.Array:
    """`Σ_ik w_ik softplus(-y_ik z_ik) / Σ_ik w_ik`, `z_ik = scale·cos(x_i, c_k) + bias`.

    `L[i, k] = +1`: a positive (weight 1); `-1`: a negative (weight 1); `0`: a negative of
    weight `unknown_weight`; any other label is ignored. The mean is over the counted pairs of
    the global batch (0, with zero gradients, when none counts), as the conditional loss's
    `normalize="triples"`.

    Args:
      image_emb: `[B, D]` raw image embeddings.
      concept_emb: `[K, D]` raw concept embeddings (replicated when sharded).
      concept_labels: integer `[B, K]`, split along `B` like `image_emb`.
      scale, bias: scalars.
      unknown_weight: weight of the `0` (unknown) entries as negatives.
      axis_name: mesh axis (or axes) when called inside `jax.shard_map` with `image_emb` and
        `concept_labels` split along `B`; every device returns the global loss. The `[b, K]`
        logits are local, so nothing travels but two scalars.

    Returns:
      The scalar loss.

    Example:
      >>> x, c = jnp.eye(3, 4), jnp.eye(2, 4)
      >>> labels = jnp.array([[1, -1], [-1, 1], [0, 0]], jnp.int8)
      >>> concept_sigmoid_loss(x, c, labels, scale=10.0, bias=-5.0).shape
      ()
    """
    x, _ = E.check_pair(image_emb, image_emb, axis_name)
    b, d = x.shape
    if concept_emb.ndim != 2 or concept_emb.shape[1] != d:
        raise ValueError(f"concept_emb must be [K, D={d}], got shape {concept_emb.shape}")
    k = concept_emb.shape[0]
    if concept_labels.shape != (b, k) or not jnp.issubdtype(concept_labels.dtype, jnp.integer):
        raise ValueError(
            f"concept_labels must be integer [B={b}, K={k}], got "
            f"{concept_labels.dtype} {concept_labels.shape}"
        )
    consts = E.scalars(x.dtype, scale=scale, bias=bias, uw=unknown_weight)
    c = jnp.asarray(concept_emb, x.dtype)
    xn = x * E.inv_norm(jnp.sum(x * x, axis=-1))[:, None]
    cn = c * E.inv_norm(jnp.sum(c * c, axis=-1))[:, None]
    z = consts["scale"] * (xn @ cn.T) + consts["bias"]  # [b, K]
    pos = concept_labels == 1
    w = pos.astype(x.dtype) + (concept_labels == -1) + consts["uw"] * (concept_labels == 0)
    total = jnp.sum(w * E.softplus(jnp.where(pos, -z, z)))
    weight = jnp.sum(w)
    if axis_name is not None:
        total, weight = lax.psum((total, weight), axis_name)
    return total / jnp.where(weight > 0, weight, 1)
