"""The jitted train step: towers -> loss (ring-sharded) -> optax update, plus its metrics.

Loss (`config.loss`):
  `sigmoid`: `sigmoid_loss + cond_weight · conditional_sigmoid_loss` (cond_weight = 0 is SigLIP),
  `softmax`: CLIP's symmetric cross-entropy (the CLIP baseline arm; no conditional term).

Both run inside `jax.shard_map` over the mesh axes the batch is split over: embeddings and label
rows split along `B`, concept embeddings replicated (GSPMD gathers them: each device encoded
its share of concept rows), so every device gets the global loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from cclip_jax.losses import EPS, conditional_sigmoid_loss, sigmoid_loss

LOSSES = ("sigmoid", "softmax")
_METRIC_ROWS = 16  # rows of the batch the gated-logit diagnostics look at (cheap, B x B x K)


@flax.struct.dataclass
class TrainState:
    """`step` int32 `[]`, `params` (unboxed tree), `opt_state` (optax)."""

    step: jax.Array
    params: Any
    opt_state: Any


def clip_softmax_loss(image_emb: jax.Array, text_emb: jax.Array, *, scale: jax.Array,
                      axis_name: str | tuple[str, ...] | None = None) -> jax.Array:
    """CLIP loss: mean of image->text and text->image cross-entropy over `scale·cos`.

    `image_emb`, `text_emb`: `[b, D]` (this device's rows when `axis_name` is given: the other
    devices' rows are all-gathered, so memory grows with the global batch, as in open_clip).
    Returns the global scalar loss on every device.
    """
    x = image_emb / jnp.maximum(jnp.linalg.norm(image_emb, axis=-1, keepdims=True), EPS)
    t = text_emb / jnp.maximum(jnp.linalg.norm(text_emb, axis=-1, keepdims=True), EPS)
    b = x.shape[0]
    if axis_name is None:
        all_x, all_t, offset, total_b = x, t, 0, b
    else:
        all_x = jax.lax.all_gather(x, axis_name, tiled=True)
        all_t = jax.lax.all_gather(t, axis_name, tiled=True)
        offset, total_b = jax.lax.axis_index(axis_name) * b, all_x.shape[0]
    ids = jnp.arange(b) + offset
    i2t = jax.nn.log_softmax(scale * x @ all_t.T, axis=-1)
    t2i = jax.nn.log_softmax(scale * t @ all_x.T, axis=-1)
    rows = jnp.arange(b)
    local = -(i2t[rows, ids].sum() + t2i[rows, ids].sum()) / 2
    if axis_name is not None:
        local = jax.lax.psum(local, axis_name)
    return local / total_b


def triple_counts(labels: jax.Array) -> dict[str, jax.Array]:
    """Counts of conditional (image, caption, concept) triples by kind, from `labels [B, K]`."""
    pos = jnp.sum(labels == 1, axis=0).astype(jnp.float32)
    neg = jnp.sum(labels == -1, axis=0).astype(jnp.float32)
    unk = jnp.sum(labels == 0, axis=0).astype(jnp.float32)
    return {"triples_pos": jnp.sum(pos * pos), "triples_neg": jnp.sum(2 * pos * neg),
            "triples_unknown": jnp.sum(2 * pos * unk)}


def gate_diagnostics(x: jax.Array, t: jax.Array, c: jax.Array, labels: jax.Array,
                     scale: jax.Array, bias: jax.Array) -> dict[str, jax.Array]:
    """Mean gated logit of positive and negative triples on 16 rows, and the entropy of
    the normalised squared gate `p = c² / Σ c²` over `D` (divided by `log D`; 1 = uniform, what
    a gate that learned nothing collapses to), averaged over concepts with a `+1`.

    `x`, `t`: `[B, D]`; `c`: `[K, D]`; `labels`: `[B, K]`.
    """
    # Rows spread over the batch: a curated batch keeps neighbours together, so its first rows
    # share all their concepts and hold no negative triple at all.
    rows = jnp.linspace(0, x.shape[0] - 1, min(_METRIC_ROWS, x.shape[0])).astype(jnp.int32)
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
    return {"logit_pos": mean(pos), "logit_neg": mean(neg),
            "gate_entropy": ent / jnp.log(c.shape[-1])}


def make_loss_fn(model: nn.Module, mesh: jax.sharding.Mesh, batch_axes: Sequence[str], *,
                 loss: str, cond_weight: float, unknown_weight: float,
                 max_present: int | None, positive_labels_only: bool = False
                 ) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
    """`loss_fn(params, batch) -> (loss, aux)` for `jax.value_and_grad(has_aux=True)`.

    `positive_labels_only` reads every `-1` label as `0` (unknown): the conditional term then
    learns its negatives only from `(+1, 0)` triples (an experiment arm: are curated `-1`
    labels worth their cost?).
    """
    if loss not in LOSSES:
        raise ValueError(f"config.loss={loss!r} is not one of {LOSSES}")
    axes = tuple(batch_axes)
    ways = math.prod(mesh.shape[a] for a in axes)  # devices the batch rows are split over
    cond = loss == "sigmoid" and cond_weight != 0
    rows, rep = P(axes), P()

    def ring(x, t, c, labels, s, b, cs, cb):
        if loss == "softmax":
            return clip_softmax_loss(x, t, scale=s, axis_name=axes), jnp.zeros((), x.dtype)
        plain = sigmoid_loss(x, t, scale=s, bias=b, axis_name=axes)
        if c is None:
            return plain, jnp.zeros((), x.dtype)
        return plain, conditional_sigmoid_loss(
            x, t, c, labels, scale=cs, bias=cb, unknown_weight=unknown_weight,
            max_present=max_present, axis_name=axes)

    sharded = jax.shard_map(ring, mesh=mesh, in_specs=(rows, rows, rep, rows, rep, rep, rep, rep),
                            out_specs=(rep, rep), check_vma=True)

    def loss_fn(params: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        if positive_labels_only:
            batch = {**batch, "labels": jnp.maximum(batch["labels"], 0).astype(jnp.int8)}
        out = model.apply({"params": params}, images=batch["images"], texts=batch["text"],
                          concepts=batch["concepts"] if cond else None, text_groups=ways)
        plain, conditional = sharded(out.image_emb, out.text_emb, out.concept_emb,
                                     batch["labels"], out.scale, out.bias, out.cond_scale,
                                     out.cond_bias)
        total = plain + cond_weight * conditional if cond else plain
        aux = {"loss_sig" if loss == "sigmoid" else "loss_clip": plain,
               "scale": out.scale, "bias": out.bias,
               "captions_cut": jnp.sum(batch["text_cut"], dtype=jnp.int32)}
        if cond:
            aux.update(loss_cond=conditional, cond_scale=out.cond_scale, cond_bias=out.cond_bias,
                       concepts_cut=jnp.sum(batch["concepts_cut"], dtype=jnp.int32),
                       **triple_counts(batch["labels"]),
                       **gate_diagnostics(out.image_emb, out.text_emb, out.concept_emb,
                                          batch["labels"], out.cond_scale, out.cond_bias))
        return total, aux

    return loss_fn


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation,
                    lr_fn: Callable[[Any], Any]) -> Callable[[TrainState, dict], tuple]:
    """`step(state, batch) -> (state, metrics)` (un-jitted; the trainer jits and donates)."""

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        tower_norms = {f"grad_norm_{name}": optax.tree.norm(sub) for name, sub in grads.items()
                       if isinstance(sub, dict)}  # per tower: img, txt
        metrics = {"loss": loss, **aux, **tower_norms, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(params), "lr": lr_fn(state.step)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return step
