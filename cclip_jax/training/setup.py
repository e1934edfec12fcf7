"""Everything a run builds before its first step, in big_vision's order: config checks -> mesh
and rules (the batch's split) -> the data (source and tokenizer opened once) and its checks ->
model and optimizer -> the state's shardings and shape-only state -> the jitted init and step.

    setup = build(config)                          # also what the tests and benchmarks use
    state = setup.init_state(jax.random.key(0))
    local = next(iter(setup.data))                 # this process's slice of batch 0
    state, metrics = setup.step(state, data.make_global_batch(local, setup.batch.rows))

`config.data.curated_dir` must name a curated folder: the demo's is built beforehand, by
`cclip_jax.curation.demo_data.ensure_demo_data` (what `python -m cclip_jax.main` does).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from cclip_jax import data as data_lib
from cclip_jax import models
from cclip_jax.training import biases, checks, optim, sharding
from cclip_jax.training.objective import Objective, make_loss_fn
from cclip_jax.training.state import TrainState, make_init
from cclip_jax.training.step import make_train_step


@dataclasses.dataclass
class Setup:
    """Everything the loop needs, built once (also used by tests and the benchmark)."""

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    batch: sharding.BatchSplit  # how every batch array lies on `mesh`
    model: nn.Module
    data: data_lib.Dataset  # this process's pipeline, with its opened source and tokenizer
    state_shardings: Any  # a TrainState of NamedShardings
    init_state: Any  # jitted rng -> TrainState
    step: Any  # jitted (state, batch) -> (state, metrics), donates state; has `.lower`
    abstract_state: Any  # a TrainState of ShapeDtypeStructs carrying `state_shardings`
    resolved: dict[str, Any]  # config fields worked out at build (curated folder, biases)


def loss_max_present(
    config: ml_collections.ConfigDict, source: data_lib.BatchSliceSource
) -> int | None:
    """R of the conditional loss from `config.max_present` ('manifest': the curated data's R,
    'dense', or an int), None for the dense path. The bounded path computes 2·B²·R logits, the
    dense one B²·K: with 2R >= K the bound saves nothing and costs gathers (the demo: R = 8,
    K = 16), so the dense path runs then, with one log line saying so. Both give the same loss.
    """
    if config.max_present == "dense":
        return None
    r = source.max_present if config.max_present == "manifest" else int(config.max_present)
    if 2 * r < source.max_concepts:
        return r
    if config.cond_weight and config.cond_form == "sigmoid":  # the one term that reads R
        logging.info(
            "config.max_present=%r: R = %d, K = %d (%s): 2R >= K, so the conditional "
            "loss runs its dense path (no more logits than the bounded one, the same "
            "loss)",
            config.max_present,
            r,
            source.max_concepts,
            source.curated_dir,
        )
    return None


def state_shardings(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    rules: sharding.LogicalRules,
) -> TrainState:
    """The `TrainState` of shardings: parameters as the rules lay out their logical axes, Adam
    moments like their parameters, the step and the rest of the optimizer state replicated."""
    boxed = model.abstract_params()
    params = sharding.param_shardings(boxed, mesh, rules)["params"]
    abstract_params = nn.unbox(boxed)["params"]
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_state = sharding.opt_state_shardings(
        jax.eval_shape(tx.init, abstract_params), abstract_params, params, replicated
    )
    return TrainState(step=replicated, params=params, opt_state=opt_state)


def _in_context(fn: Any, mesh: jax.sharding.Mesh, rules: sharding.LogicalRules) -> Any:
    """`fn` (jitted) called, and lowered, under the mesh and the logical-axis rules (the towers'
    activation constraints name logical axes, resolved only inside the rules' context)."""

    def wrapped(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn(*args)

    def lower(*args):  # ahead-of-time: `setup.step.lower(abstract_state, batch).compile()`
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn.lower(*args)

    wrapped.lower = lower
    return wrapped


def build(config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None) -> Setup:
    """Mesh, data, model, optimizer, jitted init and step of `config`, whose
    `config.data.curated_dir` names a curated folder (a ValueError naming the field when it is
    empty, a FileNotFoundError when it holds no complete curation).

    `devices` defaults to `jax.devices()` (the mesh, `config.mesh`, must use them all)."""
    checks.validate_config(config)
    spec = data_lib.DataSpec.from_config(config)
    mesh = sharding.make_mesh(dict(config.mesh), devices)
    rules = sharding.get_rules(config.sharding_rules)
    split = sharding.batch_split(mesh, rules)
    try:
        data = data_lib.build_dataset(
            spec, process_index=jax.process_index(), process_count=jax.process_count()
        )
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config.data.curated_dir={spec.curated_dir!r}: {e}") from None
    checks.check_data(config, data, split.ways)
    source = data.source

    model = models.build_model(
        config.model, **biases.initial_biases(config, source.manifest, source.curated_dir)
    )
    tx, lr_fn = optim.make_optimizer(config)
    state_sh = state_shardings(model, tx, mesh, rules)
    objective = Objective.from_config(config, loss_max_present(config, source))
    loss_fn = make_loss_fn(model, split, objective)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        init_jit = jax.jit(make_init(model, tx), out_shardings=state_sh)
        abstract_state = jax.eval_shape(init_jit, jax.random.key(0))
        abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_state,
            state_sh,
        )
    metrics_sh = NamedSharding(mesh, PartitionSpec())  # scalars, replicated
    step_jit = jax.jit(
        make_train_step(loss_fn, tx, lr_fn), out_shardings=(state_sh, metrics_sh), donate_argnums=0
    )

    resolved = {
        "data.curated_dir": os.path.abspath(spec.curated_dir),
        "model.bias_init": model.bias_init,
        "model.cond_bias_init": model.cond_bias_init,
    }
    return Setup(
        config,
        mesh,
        split,
        model,
        data,
        state_sh,
        _in_context(init_jit, mesh, rules),
        _in_context(step_jit, mesh, rules),
        abstract_state,
        resolved,
    )
