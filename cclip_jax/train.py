"""The training job: `train_and_evaluate(config, workdir)` (what `python -m cclip_jax.main` runs).

Phases, in big_vision's order: distributed set-up -> config and data checks -> mesh + rules ->
model, optimizer, shape-only state -> resume (workdir) or init (`init_from` or scratch) ->
the loop (Grain slice -> global arrays -> jitted step with donated state) with metrics, NaN
guard, periodic and on-signal checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from cclip_jax import biases, losses, models, optim, run_folder, sharding
from cclip_jax import data as data_lib
from cclip_jax.checkpointing import Checkpointer
from cclip_jax.evaluation import suite
from cclip_jax.evaluation.scorer import tokenizer_for
from cclip_jax.metrics_writer import MetricsWriter
from cclip_jax.train_step import (
    COND_FORMS,
    LOSSES,
    Objective,
    TrainState,
    make_loss_fn,
    make_train_step,
)

LABEL_MODES = ("all", "positive_only")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the message names the step and the last good checkpoint."""


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Static checks of the training config; raises ValueError naming the field."""
    for field in ("total_steps", "batch_size", "log_every_steps", "checkpoint_every_steps"):
        if not isinstance(config[field], int) or config[field] < 1:
            raise ValueError(f"config.{field}={config[field]!r} must be an int >= 1")
    if config.data.mode not in data_lib.MODES:
        raise ValueError(f"config.data.mode={config.data.mode!r} is not one of {data_lib.MODES}")
    if config.loss not in LOSSES:
        raise ValueError(f"config.loss={config.loss!r} is not one of {LOSSES}")
    if config.data.mode == "baseline" and config.cond_weight != 0:
        raise ValueError("config.cond_weight must be 0 with config.data.mode='baseline' "
                         "(i.i.d. batches carry no concept labels)")
    if config.loss == "softmax" and config.cond_weight != 0:
        raise ValueError("config.cond_weight must be 0 with config.loss='softmax' (CLIP arm)")
    if config.labels not in LABEL_MODES:
        raise ValueError(f"config.labels={config.labels!r} is not one of {LABEL_MODES}")
    if config.cond_weight < 0:
        raise ValueError(f"config.cond_weight={config.cond_weight} must be >= 0")
    if config.cond_form not in COND_FORMS:
        raise ValueError(f"config.cond_form={config.cond_form!r} is not one of {COND_FORMS}")
    if config.cond_form == "pool" and not config.model.get("pool_conditional", False):
        raise ValueError("config.cond_form='pool' needs config.model.pool_conditional=True (the "
                         "image tower's concept-pooled embeddings)")
    if config.cond_normalize not in losses.NORMALIZE:
        raise ValueError(f"config.cond_normalize={config.cond_normalize!r} is not one of "
                         f"{losses.NORMALIZE}")
    if not 0 <= config.cross_positive_weight <= 1:
        raise ValueError(f"config.cross_positive_weight={config.cross_positive_weight} must be "
                         "in [0, 1]")
    sched = config.cond_schedule
    for field in ("zero_frac", "ramp_frac"):
        if not 0 <= sched[field] <= 1:
            raise ValueError(f"config.cond_schedule.{field}={sched[field]} must be in [0, 1]")
    if sched.zero_frac + sched.ramp_frac > 1:
        raise ValueError("config.cond_schedule.zero_frac + ramp_frac must be <= 1")
    if config.tags_weight < 0 or (config.tags_weight and config.cond_weight):
        raise ValueError(f"config.tags_weight={config.tags_weight} must be >= 0, and 0 unless "
                         "config.cond_weight is 0 (the two terms share cond_t and cond_b)")
    if config.tags_weight and (config.data.mode == "baseline" or config.model.gate != "identity"):
        raise ValueError("config.tags_weight needs curated batches (config.data.mode) and "
                         "config.model.gate='identity' (it scores raw concept embeddings)")
    if config.plain_multi_positive and config.loss != "sigmoid":
        raise ValueError("config.plain_multi_positive needs config.loss='sigmoid'")
    models.tower_kwargs(config.model)  # unknown sizes etc. raise naming config.model.<field>


def batch_axes(mesh: jax.sharding.Mesh, rules: sharding.LogicalRules) -> tuple[str, ...]:
    """The mesh axes the batch dimension is split over under `rules`."""
    spec = nn.logical_to_mesh_axes(("batch",), rules)[0]
    return (spec,) if isinstance(spec, str) else tuple(spec or ())


def check_data(config: ml_collections.ConfigDict, source: data_lib.BatchSliceSource,
               tokenizer_vocab: int, ways: int) -> None:
    """Checks of the curated data against the config and mesh (ValueError naming the field)."""
    where = source.curated_dir
    if source.batch_size != config.batch_size:
        raise ValueError(f"config.batch_size={config.batch_size} differs from the curated batch "
                         f"size {source.batch_size} of {where} (curated batches stay whole)")
    if config.batch_size % ways:
        raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the "
                         f"{ways} devices the batch is split over (config.mesh)")
    if source.max_concepts % ways:
        raise ValueError(f"max_concepts={source.max_concepts} of {where} is not divisible by "
                         f"the {ways} devices concepts are split over (config.mesh)")
    if tokenizer_vocab > config.model.text.vocab_size:
        raise ValueError(f"config.model.text.vocab_size={config.model.text.vocab_size} is "
                         f"smaller than the tokenizer's {tokenizer_vocab} pieces")
    if config.max_present > source.max_concepts:
        raise ValueError(f"config.max_present={config.max_present} > max_concepts "
                         f"{source.max_concepts}")


@dataclasses.dataclass
class Setup:
    """Everything the loop needs, built once (also used by tests and the benchmark)."""

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    axes: tuple[str, ...]
    model: nn.Module
    spec: data_lib.DataSpec
    state_shardings: Any
    init_state: Any  # jitted rng -> TrainState
    step: Any  # jitted (state, batch) -> (state, metrics), donates state; has `.lower`
    abstract_state: Any
    resolved: dict[str, Any]  # config fields worked out at build (curated folder, biases)


def build(config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None) -> Setup:
    """Mesh, model, optimizer, jitted init and step, data spec (generates demo data if asked)."""
    validate_config(config)
    curated_dir = data_lib.ensure_demo_data(config)
    mesh = sharding.make_mesh(dict(config.mesh), devices)
    rules = sharding.get_rules(config.sharding_rules)
    axes = batch_axes(mesh, rules)
    ways = int(np.prod([mesh.shape[a] for a in axes]))
    spec = data_lib.DataSpec(
        curated_dir=curated_dir, mode=config.data.mode, seed=config.seed,
        image_size=config.model.image.image_size, max_len=config.model.text.max_len,
        tokenizer=config.data.tokenizer, pad_id=config.model.text.pad_id,
        sticky_eos=bool(config.model.text.get("sticky_eos", False)),
        max_shift=config.data.max_shift, brightness=config.data.brightness,
        num_workers=config.data.num_workers, prefetch=config.data.prefetch,
        hard_negatives=config.data.hard_negatives)
    try:
        source = data_lib.BatchSliceSource(curated_dir, config.data.mode)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config.data.curated_dir={curated_dir!r}: {e}") from None
    tokenizer = data_lib.Tokenizer(spec.tokenizer or source.tokenizer_path, spec.max_len)
    check_data(config, source, tokenizer.vocab_size(), ways)
    max_present = {-1: source.max_present, 0: None}.get(config.max_present, config.max_present)
    if max_present is not None and 2 * max_present >= source.max_concepts:
        # The bounded path computes 2·B²·R logits, the dense one B²·K: with 2R >= K the bound
        # saves nothing and costs gathers (the demo: R = 8, K = 16). Both give the same loss.
        max_present = None

    model = models.build_model(config.model, **biases.initial_biases(config, source.manifest,
                                                                     source.curated_dir))
    tx, lr_fn = optim.make_optimizer(config)
    boxed = model.abstract_params()
    param_sh = sharding.param_shardings(boxed, mesh, rules)["params"]
    abstract_params = nn.unbox(boxed)["params"]
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_sh = optim.state_shardings(jax.eval_shape(tx.init, abstract_params), abstract_params,
                                   param_sh, replicated)
    state_sh = TrainState(step=replicated, params=param_sh, opt_state=opt_sh)

    def init_state(rng: jax.Array) -> TrainState:
        params = nn.unbox(model.init_params(rng))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=tx.init(params))

    loss_fn = make_loss_fn(model, mesh, axes, Objective.from_config(config, max_present))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        init_jit = jax.jit(init_state, out_shardings=state_sh)
        abstract_state = jax.eval_shape(init_jit, jax.random.key(0))
        abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_state, state_sh)
    step_jit = jax.jit(make_train_step(loss_fn, tx, lr_fn), out_shardings=(state_sh, replicated),
                       donate_argnums=0)

    def in_context(fn):
        def wrapped(*args):
            with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
                return fn(*args)

        def lower(*args):  # ahead-of-time: `setup.step.lower(abstract_state, batch).compile()`
            with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
                return fn.lower(*args)

        wrapped.lower = lower
        return wrapped

    resolved = {"data.curated_dir": os.path.abspath(curated_dir),
                "model.bias_init": model.bias_init, "model.cond_bias_init": model.cond_bias_init}
    return Setup(config, mesh, axes, model, spec, state_sh, in_context(init_jit),
                 in_context(step_jit), abstract_state, resolved)


def initial_state(setup: Setup, ckpt: Checkpointer, data_iter: Any) -> TrainState:
    """Resume from the workdir's latest complete checkpoint, else `init_from`, else scratch."""
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


class _StopFlag:
    """Set by SIGTERM/SIGINT (preemption): the loop saves a checkpoint, then returns."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        del frame
        self.signum = signum


# Per-step counts that are logged as sums over the steps since the previous log line (a
# count seen only at logged steps would miss most of them).
_INTERVAL_SUMS = ("captions_cut", "concepts_cut", "hard_unswapped")


def _flush(pending: list, writer: MetricsWriter, config: ml_collections.ConfigDict,
           ckpt: Checkpointer, timing: dict) -> None:
    """Fetches pending metrics, stops on a non-finite loss, writes the logged steps."""
    if not pending:
        return
    host = jax.device_get([m for _, m in pending])
    now = time.perf_counter()
    steps_done = pending[-1][0] - timing["step"]
    rate = steps_done / max(now - timing["time"], 1e-9)
    timing.update(step=pending[-1][0], time=now)
    sums = timing.setdefault("sums", {})
    for (step, _), metrics in zip(pending, host, strict=True):
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss} at step {step}; last good checkpoint: "
                f"{ckpt.latest_step()} in {ckpt.directory}")
        for key in _INTERVAL_SUMS:
            if key in metrics:
                sums[key] = sums.get(key, 0) + int(metrics[key])
        if step % config.log_every_steps == 0 or step == config.total_steps:
            if sums.get("concepts_cut") and not timing.get("warned_cut"):
                timing["warned_cut"] = True
                logging.warning("%d concepts were longer than config.model.text.max_len=%d "
                                "tokens and were cut, steps up to %d; metrics.jsonl counts "
                                "them as concepts_cut", sums["concepts_cut"],
                                config.model.text.max_len, step)
            writer.write(step, {**metrics, **sums, "steps_per_s": rate,
                                "examples_per_s": rate * config.batch_size})
            sums.clear()
    pending.clear()


def resolved_config(config: ml_collections.ConfigDict, fields: dict[str, Any]
                    ) -> dict[str, Any]:
    """The config as `config.json` holds it: with the fields worked out at build filled in
    (the curated folder, the initial biases: what the evaluation CLI and the report read to
    rebuild the model and find the tokenizer and the data). `fields`: dotted path -> value."""
    resolved = json.loads(config.to_json_best_effort())
    for path, value in fields.items():
        *parents, leaf = path.split(".")
        node = resolved
        for name in parents:
            node = node[name]
        node[leaf] = value
    return resolved


def write_run_config(workdir: str, config: ml_collections.ConfigDict,
                     fields: dict[str, Any]) -> None:
    """`workdir/config.json`: `resolved_config(config, fields)`, written atomically."""
    run_folder.write_config(workdir, resolved_config(config, fields))


def _host_params(state: TrainState) -> Any:
    """The full parameters on this host (gathered across processes in a multi-host run)."""
    if jax.process_count() == 1:
        return jax.device_get(state.params)
    return multihost_utils.process_allgather(state.params, tiled=True)


def _evaluate(evaluator: suite.RunEvaluator | None, state: TrainState, step: int) -> None:
    params = _host_params(state)  # every process joins a multi-host gather
    if evaluator is not None:  # process 0 evaluates and writes
        evaluator(params, step)


def _eval_due(config: ml_collections.ConfigDict, step: int) -> bool:
    """Whether the loop evaluates after `step` (the final evaluation follows the loop)."""
    every = config.eval.every_steps
    return every > 0 and step % every == 0 and step < config.total_steps


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       force_config_change: bool = False) -> dict[str, float]:
    """Trains to `config.total_steps`, resuming from `workdir`; returns the last metrics.

    A resume must use the run's own config, up to `run_folder.MAY_CHANGE_ON_RESUME`: any other
    change raises `run_folder.ConfigChangedError` before anything is written, unless
    `force_config_change` (then it is recorded in the folder's history). `config.json` is
    (re)written only once the restore has succeeded.
    """
    if config.distributed:
        jax.distributed.initialize()
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir",
                          os.path.expanduser(config.compilation_cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    setup = build(config)
    resolved = resolved_config(config, setup.resolved)
    ckpt = Checkpointer(run_folder.path(workdir, run_folder.CHECKPOINTS),
                        max_to_keep=config.max_checkpoints, async_save=config.async_checkpoints)
    resuming = ckpt.latest_step() is not None
    if resuming:
        try:
            run_folder.check_resume(workdir, resolved, force=force_config_change)
        except run_folder.ConfigChangedError:
            ckpt.close()
            raise
    dataset = data_lib.build_dataset(setup.spec, process_index=jax.process_index(),
                                     process_count=jax.process_count())
    data_iter = iter(dataset)
    state = initial_state(setup, ckpt, data_iter)
    step = int(jax.device_get(state.step))
    run_config = None
    if jax.process_index() == 0:  # the restore worked: now the folder may be written
        run_folder.write_config(workdir, resolved)
        run_folder.append_history(workdir, "resume" if resuming else "start", step=step)
        run_config = ml_collections.ConfigDict(resolved)
    evaluator = (suite.RunEvaluator(setup.model, tokenizer_for(run_config), run_config, workdir)
                 if run_config is not None and config.eval.every_steps >= 0 else None)
    writer = MetricsWriter(workdir, config.total_steps, start_step=step, console=config.progress)
    stop = _StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    pending: list = []
    timing = {"step": step, "time": time.perf_counter()}
    last: dict[str, float] = {}
    try:
        while step < config.total_steps:
            batch = data_lib.make_global_batch(next(data_iter), setup.mesh, setup.axes)
            state, metrics = setup.step(state, batch)
            step += 1
            pending.append((step, metrics))
            preempted = stop.signum is not None or (
                jax.process_count() > 1 and ckpt.manager.reached_preemption(step))
            save = step % config.checkpoint_every_steps == 0 or step == config.total_steps
            if save or preempted or step % config.log_every_steps == 0:
                last = jax.device_get(pending[-1][1])
                _flush(pending, writer, config, ckpt, timing)  # before any save: no NaN state
            if save or preempted:
                ckpt.save(step, state, data_iter, config)
            if _eval_due(config, step) and not preempted:
                _evaluate(evaluator, state, step)
            if preempted:
                logging.warning("Stopping at step %d on signal %s after saving", step,
                                stop.signum)
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        ckpt.wait()
        ckpt.close()
        writer.close()
        data_iter.close()  # stops Grain's worker processes and frees their shared memory
    # The final evaluation, also when a restarted run finds itself already finished (e.g. it
    # was preempted right after its last checkpoint) and that evaluation is missing.
    final = os.path.join(workdir, suite.EVAL_DIR, f"step_{config.total_steps:08d}.json")
    done = jax.process_index() == 0 and os.path.exists(final)
    if jax.process_count() > 1:  # every process must agree before joining the gather
        done = bool(multihost_utils.broadcast_one_to_all(np.int32(done)))
    if step == config.total_steps and config.eval.every_steps >= 0 and not done:
        _evaluate(evaluator, state, step)
    return {k: float(v) for k, v in last.items()}
