"""What the step minimises: `Objective` (the config's loss fields) and `make_loss_fn`.

Loss (`config.loss`), with the conditional term's knobs in `Objective`:
  `sigmoid`: `sigmoid_loss + λ(step) · conditional_sigmoid_loss` (λ = 0 is SigLIP),
  `softmax`: CLIP's symmetric cross-entropy (the CLIP baseline arm; no conditional term);
  the conditional term in its `cond_form`: `sigmoid` (CCLIP) or `rank`
  (`conditional_ranking_loss`, a multi-positive softmax with no bias) or `pool`
  (`pooled_conditional_sigmoid_loss` on the model's concept-pooled `image_cond_emb`);
  the plain term with NegCLIP hard negatives when `config.data.hard_negatives`;
  either plus `tags_weight · concept_sigmoid_loss` (the image × concept classifier control,
  on the conditional term's scale and bias).

Both run inside `jax.shard_map` over the mesh axes the batch is split over (the run's
`sharding.BatchSplit`): embeddings and label rows split along `B`, concept embeddings replicated
(GSPMD gathers them: each device encoded its share of concept rows), so every device gets the
global loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from cclip_jax import losses
from cclip_jax.training import diagnostics, sharding

LOSSES = ("sigmoid", "softmax")
COND_FORMS = ("sigmoid", "rank", "pool")


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the step minimises (the config's loss fields; see configs/common.py).

    `cond_weight` is λ at full strength; `cond_zero_steps` and `cond_ramp_steps` hold it at 0
    for the first steps, then ramp it linearly to λ. `max_present` None is the dense path.
    """

    loss: str = "sigmoid"
    cond_form: str = "sigmoid"
    cond_weight: float = 0.0
    unknown_weight: float = 1.0
    cross_positive_weight: float = 1.0
    normalize: str = "triples"
    max_present: int | None = None
    positive_labels_only: bool = False
    concept_stop_gradient: bool = False
    plain_multi_positive: bool = False
    cond_zero_steps: int = 0
    cond_ramp_steps: int = 0
    tags_weight: float = 0.0
    hard_negatives: bool = False

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, max_present: int | None) -> Objective:
        sched = config.cond_schedule
        return cls(
            loss=config.loss,
            cond_form=config.cond_form,
            cond_weight=float(config.cond_weight),
            unknown_weight=float(config.unknown_weight),
            cross_positive_weight=float(config.cross_positive_weight),
            normalize=config.cond_normalize,
            max_present=max_present,
            positive_labels_only=config.labels == "positive_only",
            concept_stop_gradient=bool(config.concept_stop_gradient),
            plain_multi_positive=bool(config.plain_multi_positive),
            cond_zero_steps=round(sched.zero_frac * config.total_steps),
            cond_ramp_steps=round(sched.ramp_frac * config.total_steps),
            tags_weight=float(config.tags_weight),
            hard_negatives=bool(config.data.hard_negatives),
        )

    @property
    def conditional(self) -> bool:
        return self.loss == "sigmoid" and self.cond_weight != 0

    @property
    def needs_concepts(self) -> bool:
        return self.conditional or self.tags_weight != 0

    def cond_weight_at(self, step: jax.Array) -> jax.Array:
        """λ at `step` (the number of updates already applied): 0, a linear ramp, then λ."""
        s = jnp.asarray(step, jnp.float32) - self.cond_zero_steps
        if self.cond_ramp_steps > 0:
            frac = jnp.clip((s + 1) / self.cond_ramp_steps, 0.0, 1.0)
        else:
            frac = (s >= 0).astype(jnp.float32)
        return self.cond_weight * frac


def make_loss_fn(
    model: nn.Module, split: sharding.BatchSplit, objective: Objective
) -> Callable[[Any, dict, jax.Array], tuple]:
    """`loss_fn(params, batch, step) -> (loss, aux)` for `value_and_grad(has_aux=True)`.

    `batch`: the global arrays of `data.make_global_batch` laid out as `split` says
    (`images [B, S, S, 3]`, `text [B, L]`, `concepts [K, L]`, `labels [B, K]`, ...); `step`
    int32 `[]`; `loss` float32 `[]`, `aux` a dict of scalars (the logged metrics).

    `positive_labels_only` reads every `-1` label as `0` (unknown): the conditional term then
    learns its negatives only from `(+1, 0)` triples (an experiment arm: are curated `-1`
    labels worth their cost?).
    """
    obj = objective
    if obj.loss not in LOSSES:
        raise ValueError(f"config.loss={obj.loss!r} is not one of {LOSSES}")
    axes, ways = split.axes, split.ways  # ways: devices the batch rows are split over

    def ring(r: dict, rep: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
        """This device's rows `r` (embeddings, labels, ids), the replicated `rep` (concepts,
        scales, biases) -> the global (plain, conditional, tags) losses."""
        x, t, labels = r["x"], r["t"], r["labels"]
        c, cs, cb = rep["c"], rep["cond_scale"], rep["cond_bias"]
        hard = dict(hard_text_emb=r["hard"], hard_valid=r["hard_ok"])
        zero = jnp.zeros((), x.dtype)
        if obj.loss == "softmax":
            plain = losses.softmax_loss(x, t, scale=rep["scale"], axis_name=axes, **hard)
        else:
            plain = losses.sigmoid_loss(
                x,
                t,
                scale=rep["scale"],
                bias=rep["bias"],
                pair_ids=r["ids"],
                axis_name=axes,
                **hard,
            )
        if not obj.conditional:
            conditional = zero
        elif obj.cond_form == "rank":
            conditional = losses.conditional_ranking_loss(
                x, t, c, labels, scale=cs, unknown_weight=obj.unknown_weight, axis_name=axes
            )
        elif obj.cond_form == "pool":  # x_{i|k} [b, K, D]: dense over the batch's concepts
            conditional = losses.pooled_conditional_sigmoid_loss(
                r["xc"],
                t,
                labels,
                scale=cs,
                bias=cb,
                unknown_weight=obj.unknown_weight,
                cross_positive_weight=obj.cross_positive_weight,
                normalize=obj.normalize,
                axis_name=axes,
            )
        else:
            conditional = losses.conditional_sigmoid_loss(
                x,
                t,
                c,
                labels,
                scale=cs,
                bias=cb,
                unknown_weight=obj.unknown_weight,
                cross_positive_weight=obj.cross_positive_weight,
                normalize=obj.normalize,
                max_present=obj.max_present,
                axis_name=axes,
            )
        tags = (
            zero
            if not obj.tags_weight
            else losses.concept_sigmoid_loss(
                x, c, labels, scale=cs, bias=cb, unknown_weight=obj.unknown_weight, axis_name=axes
            )
        )
        return plain, conditional, tags

    # Every leaf of the first dict is split along the batch rows, of the second replicated.
    sharded = jax.shard_map(
        ring, mesh=split.mesh, in_specs=(P(axes), P()), out_specs=(P(), P(), P()), check_vma=True
    )

    def loss_fn(
        params: Any, batch: dict[str, jax.Array], step: jax.Array
    ) -> tuple[jax.Array, dict]:
        labels = batch["labels"]
        if obj.positive_labels_only:
            labels = jnp.maximum(labels, 0).astype(jnp.int8)
        out = model.apply(
            {"params": params},
            images=batch["images"],
            texts=batch["text"],
            concepts=batch["concepts"] if obj.needs_concepts else None,
            text_groups=ways,
        )
        pooled = out.image_cond_emb if obj.conditional and obj.cond_form == "pool" else None
        if obj.conditional and obj.cond_form == "pool" and pooled is None:
            raise ValueError(
                "cond_form='pool' needs a model built with config.model.pool_conditional=True"
            )
        concepts = out.concept_emb
        if concepts is not None and obj.concept_stop_gradient:
            # The concept path gets no gradient; the shared text tower still trains through
            # the captions, so concept embeddings keep moving with it.
            concepts = jax.lax.stop_gradient(concepts)
        ids = losses.pair_ids_from_tokens(batch["text"]) if obj.plain_multi_positive else None
        if obj.tags_weight:
            # Padding columns (no +1 anywhere in the batch) are no concept: label them 2,
            # which every loss ignores, or the classifier would learn them as negatives.
            labels = jnp.where(jnp.any(labels == 1, axis=0), labels, 2).astype(jnp.int8)
        hard = hard_ok = None
        if obj.hard_negatives:  # NegCLIP: each caption's swapped twin, scored against its image
            hard = model.apply({"params": params}, texts=batch["hard_text"]).text_emb
            hard_ok = batch["hard_ok"]
        row_args = dict(
            x=out.image_emb,
            t=out.text_emb,
            labels=labels,
            ids=ids,
            xc=pooled,
            hard=hard,
            hard_ok=hard_ok,
        )
        rep_args = dict(
            c=concepts,
            scale=out.scale,
            bias=out.bias,
            cond_scale=out.cond_scale,
            cond_bias=out.cond_bias,
        )
        plain, conditional, tags = sharded(row_args, rep_args)
        aux = {
            "loss_sig" if obj.loss == "sigmoid" else "loss_clip": plain,
            "scale": out.scale,
            "bias": out.bias,
            "captions_cut": jnp.sum(batch["text_cut"], dtype=jnp.int32),
        }
        if hard_ok is not None:  # rows whose caption the swap rule could not change
            aux["hard_unswapped"] = jnp.sum(hard_ok == 0, dtype=jnp.int32)
        if ids is not None:  # positives beyond the diagonal: identical captions in the batch
            aux["plain_extra_positives"] = jnp.sum(ids[:, None] == ids[None, :]) - ids.shape[0]
        total = plain
        if obj.tags_weight:
            aux.update(loss_tags=tags, cond_scale=out.cond_scale, cond_bias=out.cond_bias)
            total = total + obj.tags_weight * tags
        if not obj.conditional:
            return total, aux
        lam = obj.cond_weight_at(step)
        aux.update(
            loss_cond=conditional,
            cond_weight=lam,
            cond_scale=out.cond_scale,
            cond_bias=out.cond_bias,
            concepts_cut=jnp.sum(batch["concepts_cut"], dtype=jnp.int32),
            **diagnostics.triple_counts(labels),
            **diagnostics.gate_diagnostics(
                out.image_emb, out.text_emb, out.concept_emb, labels, out.cond_scale, out.cond_bias
            ),
        )
        return total + lam * conditional, aux

    return loss_fn
