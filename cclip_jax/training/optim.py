"""The optimizer: AdamW with warmup + cosine, global-norm clipping, per-tower lr multipliers.

Parameters fall into groups by their top-level name: `img` (image tower), `txt` (text tower)
and `temperature` (everything else: the logit scales and biases `t`, `b`, `cond_t`, `cond_b`).
`config.optim.lr_mults[group]` scales the group's learning rate; 0 freezes it
(`optax.set_to_zero`, no Adam moments kept), which is how a fine-tune from SigLIP can hold a
tower fixed. Adam moves a scalar by about its learning rate per step whatever its gradient, so
over a short run the temperatures need a multiplier well above 1 to travel at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

GROUPS = ("img", "txt", "temperature")


def schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to `optim.lr` over `optim.warmup_steps`, then cosine to
    `optim.lr * optim.end_lr_frac` at `total_steps`."""
    o = config.optim
    warmup = min(o.warmup_steps, max(config.total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=o.lr,
        warmup_steps=warmup,
        decay_steps=max(config.total_steps, warmup + 1),
        end_value=o.lr * o.end_lr_frac,
    )


def param_groups(params: Any) -> Any:
    """The group name (`img`, `txt` or `temperature`) of every leaf of `params`."""
    return {
        name: jax.tree.map(lambda _, n=name: n if n in GROUPS else "temperature", sub)
        for name, sub in params.items()
    }


def _decay_mask(params: Any) -> Any:
    # Weight decay on matrices only (not on biases, norms, scales), as is standard for AdamW.
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """`(tx, lr_fn)`: the optax transformation and the base learning rate at a step."""
    o = config.optim
    lr = schedule(config)
    mults = dict(o.lr_mults)
    unknown = set(mults) - set(GROUPS)
    if unknown:
        raise ValueError(
            f"config.optim.lr_mults has unknown groups {sorted(unknown)}; known: {GROUPS}"
        )
    per_group = {}
    for group in GROUPS:
        m = float(mults.get(group, 1.0))
        if m < 0:
            raise ValueError(f"config.optim.lr_mults.{group}={m} must be >= 0")
        per_group[group] = (
            optax.set_to_zero()
            if m == 0
            else optax.adamw(
                lambda step, m=m: m * lr(step),
                b1=o.b1,
                b2=o.b2,
                eps=o.eps,
                weight_decay=o.weight_decay,
                mask=_decay_mask,
            )
        )
    chain = []
    if o.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(o.grad_clip_norm))
    chain.append(optax.multi_transform(per_group, param_groups))
    return optax.chain(*chain), lr
