"""The train step: loss and gradients, the optax update, and the step's metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from cclip_jax.training.state import TrainState


def make_train_step(
    loss_fn: Callable, tx: optax.GradientTransformation, lr_fn: Callable[[Any], Any]
) -> Callable[[TrainState, dict], tuple]:
    """`step(state, batch) -> (state, metrics)` (un-jitted; the setup jits and donates).

    `loss_fn` is `objective.make_loss_fn`'s; `metrics` holds its aux scalars plus `loss`, the
    gradient norms (global and per tower), the parameter norm and the learning rate `lr`.
    """

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, state.step
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        tower_norms = {
            f"grad_norm_{name}": optax.tree.norm(sub)
            for name, sub in grads.items()
            if isinstance(sub, dict)
        }  # per tower: img, txt
        metrics = {
            "loss": loss,
            **aux,
            **tower_norms,
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
            "lr": lr_fn(state.step),
        }
        return TrainState(state.step + 1, params, opt_state), metrics

    return step
