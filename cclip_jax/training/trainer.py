"""The training job: `train_and_evaluate(config, workdir)` (what `python -m cclip_jax.main` runs).

Phases, in big_vision's order: `setup.build` (checks, mesh, data, model, shardings, jitted
step) -> the run folder's resume check -> init or restore (`state.initial_state`) -> the loop
(Grain slice -> global arrays -> jitted step with donated state) with metrics, NaN guard,
periodic and on-signal checkpoints, and evaluations. Process-wide set-up
(`jax.distributed.initialize()`, the compilation cache) is the caller's, once per process
(`cli.setup_process`): the experiment calls this function many times in one process. So is
the demo's data: `config.data.curated_dir` must name a curated folder
(`cclip_jax.curation.demo_data.ensure_demo_data` builds the demo's).
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from cclip_jax import config as config_lib
from cclip_jax import data as data_lib
from cclip_jax import run_folder
from cclip_jax.evaluation import suite
from cclip_jax.run_folder import paths
from cclip_jax.run_folder.checkpoints import Checkpointer
from cclip_jax.run_folder.metrics import MetricsWriter
from cclip_jax.training.corrupt import CorruptBatchError, next_batch
from cclip_jax.training.setup import build
from cclip_jax.training.state import TrainState, initial_state


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the message names the step and the last good checkpoint."""


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


def _flush(
    pending: list,
    writer: MetricsWriter,
    config: ml_collections.ConfigDict,
    ckpt: Checkpointer,
    timing: dict,
) -> None:
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
                f"{ckpt.latest_step()} in {ckpt.directory}"
            )
        for key in _INTERVAL_SUMS:
            if key in metrics:
                sums[key] = sums.get(key, 0) + int(metrics[key])
        if step % config.log_every_steps == 0 or step == config.total_steps:
            if sums.get("concepts_cut") and not timing.get("warned_cut"):
                timing["warned_cut"] = True
                logging.warning(
                    "%d concepts were longer than config.model.text.max_len=%d "
                    "tokens and were cut, steps up to %d; metrics.jsonl counts "
                    "them as concepts_cut",
                    sums["concepts_cut"],
                    config.model.text.max_len,
                    step,
                )
            writer.write(
                step,
                {
                    **metrics,
                    **sums,
                    "steps_per_s": rate,
                    "examples_per_s": rate * config.batch_size,
                },
            )
            sums.clear()
    pending.clear()


def resolved_config(config: ml_collections.ConfigDict, fields: dict[str, Any]) -> dict[str, Any]:
    """The config as `config.json` holds it: with the fields worked out at build filled in
    (the curated folder, the initial biases: what the evaluation CLI and the report read to
    rebuild the model and find the tokenizer and the data). `fields`: dotted path -> value."""
    return config_lib.override(json.loads(config.to_json_best_effort()), fields)


def write_run_config(
    workdir: str, config: ml_collections.ConfigDict, fields: dict[str, Any]
) -> None:
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


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, force_config_change: bool = False
) -> dict[str, float]:
    """Trains to `config.total_steps`, resuming from `workdir`; returns the last metrics.

    A resume must use the run's own config, up to `run_folder.MAY_CHANGE_ON_RESUME`: any other
    change raises `run_folder.ConfigChangedError` before anything is written, unless
    `force_config_change` (then it is recorded in the folder's history). `config.json` is
    (re)written only once the restore has succeeded. The process must be set up first, once
    (`cli.setup_process(config)`).
    """
    run_folder.check_workdir(workdir)  # a gs:// folder without its package: before any work
    setup = build(config)
    resolved = resolved_config(config, setup.resolved)
    ckpt = Checkpointer(
        run_folder.path(workdir, run_folder.CHECKPOINTS),
        max_to_keep=config.max_checkpoints,
        async_save=config.async_checkpoints,
    )
    resuming = ckpt.latest_step() is not None
    changes = []
    if resuming:
        try:
            changes = run_folder.check_resume(workdir, resolved, force=force_config_change)
        except run_folder.ConfigChangedError:
            ckpt.close()
            raise
    data_iter = iter(setup.data)
    state = initial_state(setup, ckpt, data_iter)
    step = int(jax.device_get(state.step))
    if jax.process_index() == 0:  # the restore worked: now the folder may be written
        if changes:
            run_folder.record_forced_change(workdir, changes)
        run_folder.write_config(workdir, resolved)
        run_folder.append_history(workdir, "resume" if resuming else "start", step=step)
    # Process 0 evaluates, with the pipeline's own tokenizer and the run's config.
    evaluator = (
        suite.RunEvaluator(setup.model, setup.data.tokenizer, config, workdir)
        if jax.process_index() == 0 and config.eval.every_steps >= 0
        else None
    )
    writer = MetricsWriter(workdir, config.total_steps, start_step=step, console=config.progress)
    stop = _StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    pending: list = []
    timing = {"step": step, "time": time.perf_counter(), "sums": {}}
    last: dict[str, float] = {}
    saved = step  # the last step with a checkpoint (or the start)
    try:
        while step < config.total_steps:
            try:
                local = next_batch(
                    data_iter,
                    step,
                    config.data.skip_corrupt_batches,
                    setup.data.source.num_batches,
                    timing["sums"],
                )
            except CorruptBatchError:
                # Save the last good step, so a run stopped by a bad shard resumes on the very
                # batch it could not read once the file is repaired (the iterator is back before
                # it). A lone process of a multi-process run cannot join a collective save.
                if step > saved and jax.process_count() == 1:
                    _flush(pending, writer, config, ckpt, timing)
                    writer.flush()
                    ckpt.save(step, state, data_iter, config)
                raise
            batch = data_lib.make_global_batch(local, setup.batch.rows)
            state, metrics = setup.step(state, batch)
            step += 1
            pending.append((step, metrics))
            preempted = stop.signum is not None or (
                jax.process_count() > 1 and ckpt.manager.reached_preemption(step)
            )
            save = step % config.checkpoint_every_steps == 0 or step == config.total_steps
            if save or preempted or step % config.log_every_steps == 0:
                last = jax.device_get(pending[-1][1])
                _flush(pending, writer, config, ckpt, timing)  # before any save: no NaN state
            if save or preempted:
                writer.flush()  # the metrics up to a checkpoint are in the folder before it
                ckpt.save(step, state, data_iter, config)
                saved = step
            if _eval_due(config, step) and not preempted:
                _evaluate(evaluator, state, step)
            if preempted:
                logging.warning("Stopping at step %d on signal %s after saving", step, stop.signum)
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            ckpt.close()  # waits for the last async save: a full disk is raised here
        finally:
            writer.close()
            data_iter.close()  # stops Grain's worker processes and frees their shared memory
    # The final evaluation, also when a restarted run finds itself already finished (e.g. it
    # was preempted right after its last checkpoint) and that evaluation is missing.
    final = run_folder.eval_path(workdir, config.total_steps)
    done = jax.process_index() == 0 and paths.exists(final)
    if jax.process_count() > 1:  # every process must agree before joining the gather
        done = bool(multihost_utils.broadcast_one_to_all(np.int32(done)))
    if step == config.total_steps and config.eval.every_steps >= 0 and not done:
        _evaluate(evaluator, state, step)
    return {k: float(v) for k, v in last.items()}
