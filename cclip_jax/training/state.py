"""The training state and where a run's first state comes from: init or restore.

`initial_state` picks, in this order: the workdir's latest complete checkpoint (a resume),
`config.init_from` (a big_vision SigLIP `.npz` or another run's checkpoints: the parameters
only, a fresh optimizer), else the random init.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from absl import logging

from cclip_jax import models
from cclip_jax.run_folder.checkpoints import Checkpointer

if TYPE_CHECKING:  # the setup module builds on this one
    from cclip_jax.training.setup import Setup


@flax.struct.dataclass
class TrainState:
    """`step` int32 `[]`, `params` (unboxed tree), `opt_state` (optax)."""

    step: jax.Array
    params: Any
    opt_state: Any


def make_init(
    model: nn.Module, tx: optax.GradientTransformation
) -> Callable[[jax.Array], TrainState]:
    """`init(rng) -> TrainState` at step 0 (un-jitted; the setup jits it onto the shardings)."""

    def init(rng: jax.Array) -> TrainState:
        params = nn.unbox(model.init_params(rng))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init


def initial_state(setup: Setup, ckpt: Checkpointer, data_iter: Any) -> TrainState:
    """Resume from the workdir's latest complete checkpoint, else `init_from`, else scratch.

    A resume also restores `data_iter` (the Grain iterator) in place."""
    latest = ckpt.latest_step()
    if latest is not None:
        logging.info("Resuming from checkpoint %d in %s", latest, ckpt.directory)
        return ckpt.restore(latest, setup.abstract_state, data_iter)
    state = setup.init_state(jax.random.key(setup.config.seed))
    source = setup.config.init_from
    if not source:
        return state
    if source.endswith(".npz"):
        params = models.load_siglip_npz(source, jax.device_get(state.params))
    else:
        other = Checkpointer(source, async_save=False)
        step = other.latest_step()
        if step is None:
            raise ValueError(f"config.init_from={source!r} holds no complete checkpoint")
        params = other.restore_params(step, setup.abstract_state.params)
        other.close()
    params = jax.device_put(params, setup.state_shardings.params)
    logging.info("Initialised parameters from %s", source)
    return state.replace(params=params)
