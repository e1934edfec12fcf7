"""Everything a run builds before its first step, in big_vision's order: config checks -> mesh
and rules (the batch's split) -> data spec and data checks -> model and optimizer -> the
state's shardings and shape-only state -> the jitted init and step.

    setup = build(config)                          # also what the tests and benchmarks use
    state = setup.init_state(jax.random.key(0))
    state, metrics = setup.step(state, data.make_global_batch(local, setup.batch.rows))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax
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
    spec: data_lib.DataSpec
    state_shardings: Any  # a TrainState of NamedShardings
    init_state: Any  # jitted rng -> TrainState
    step: Any  # jitted (state, batch) -> (state, metrics), donates state; has `.lower`
    abstract_state: Any  # a TrainState of ShapeDtypeStructs carrying `state_shardings`
    resolved: dict[str, Any]  # config fields worked out at build (curated folder, biases)


def _data_spec(config: ml_collections.ConfigDict, curated_dir: str) -> data_lib.DataSpec:
    return data_lib.DataSpec(
        curated_dir=curated_dir, mode=config.data.mode, seed=config.seed,
        image_size=config.model.image.image_size, max_len=config.model.text.max_len,
        tokenizer=config.data.tokenizer, pad_id=config.model.text.pad_id,
        sticky_eos=bool(config.model.text.get("sticky_eos", False)),
        max_shift=config.data.max_shift, brightness=config.data.brightness,
        num_workers=config.data.num_workers, prefetch=config.data.prefetch,
        hard_negatives=config.data.hard_negatives)


def state_shardings(model: nn.Module, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh, rules: sharding.LogicalRules) -> TrainState:
    """The `TrainState` of shardings: parameters as the rules lay out their logical axes, Adam
    moments like their parameters, the step and the rest of the optimizer state replicated."""
    boxed = model.abstract_params()
    params = sharding.param_shardings(boxed, mesh, rules)["params"]
    abstract_params = nn.unbox(boxed)["params"]
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_state = sharding.opt_state_shardings(jax.eval_shape(tx.init, abstract_params),
                                             abstract_params, params, replicated)
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
    """Mesh, model, optimizer, jitted init and step, data spec (generates demo data if asked).

    `devices` defaults to `jax.devices()` (the mesh, `config.mesh`, must use them all)."""
    checks.validate_config(config)
    curated_dir = data_lib.ensure_demo_data(config)
    mesh = sharding.make_mesh(dict(config.mesh), devices)
    rules = sharding.get_rules(config.sharding_rules)
    split = sharding.batch_split(mesh, rules)
    spec = _data_spec(config, curated_dir)
    try:
        source = data_lib.BatchSliceSource(curated_dir, config.data.mode)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config.data.curated_dir={curated_dir!r}: {e}") from None
    tokenizer = data_lib.Tokenizer(spec.tokenizer or source.tokenizer_path, spec.max_len)
    checks.check_data(config, source, tokenizer.vocab_size(), split.ways)
    max_present = {-1: source.max_present, 0: None}.get(config.max_present, config.max_present)
    if max_present is not None and 2 * max_present >= source.max_concepts:
        # The bounded path computes 2·B²·R logits, the dense one B²·K: with 2R >= K the bound
        # saves nothing and costs gathers (the demo: R = 8, K = 16). Both give the same loss.
        max_present = None

    model = models.build_model(config.model, **biases.initial_biases(config, source.manifest,
                                                                     source.curated_dir))
    tx, lr_fn = optim.make_optimizer(config)
    state_sh = state_shardings(model, tx, mesh, rules)
    loss_fn = make_loss_fn(model, split, Objective.from_config(config, max_present))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        init_jit = jax.jit(make_init(model, tx), out_shardings=state_sh)
        abstract_state = jax.eval_shape(init_jit, jax.random.key(0))
        abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_state, state_sh)
    metrics_sh = NamedSharding(mesh, PartitionSpec())  # scalars, replicated
    step_jit = jax.jit(make_train_step(loss_fn, tx, lr_fn), out_shardings=(state_sh, metrics_sh),
                       donate_argnums=0)

    resolved = {"data.curated_dir": os.path.abspath(curated_dir),
                "model.bias_init": model.bias_init, "model.cond_bias_init": model.cond_bias_init}
    return Setup(config, mesh, split, model, spec, state_sh, _in_context(init_jit, mesh, rules),
                 _in_context(step_jit, mesh, rules), abstract_state, resolved)
