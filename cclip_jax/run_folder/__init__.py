"""The training run folder: every path in it, its config, its history, and the resume check.

This package owns the folder. Its `__init__` is the light layout API; what writes the heavy
parts lives in submodules imported where needed: `checkpoints` (orbax) and `metrics` (JSONL,
TensorBoard, the console line). Every file operation on the folder goes through `paths`, so
DIR may be a local path or a URL (`gs://bucket/run`; `check_workdir` says in one line what to
install when its package is missing). It imports nothing of training, evaluation, the report
or the experiment, which all build on it.

    DIR/config.json        the resolved config of the run (curated folder, initial biases)
    DIR/history.jsonl      one line per start: new run, resume, forced config change
    DIR/checkpoints/       orbax steps (run_folder.checkpoints)
    DIR/metrics.jsonl      logged metrics (run_folder.metrics)
    DIR/tensorboard/       TensorBoard event files
    DIR/eval/step_*.json   evaluations (cclip_jax.evaluation.suite)
    DIR/report.html        the report (cclip_jax.report), with DIR/report_files/

Resuming a run with another config would silently mix two experiments in one folder, so
`check_resume` compares the new (resolved) config with the run's own and refuses any change
outside `MAY_CHANGE_ON_RESUME`, naming each field with its old and new value, unless forced;
a forced change is recorded in `history.jsonl`. The trainer writes nothing into the folder
before that check and the restore have passed.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

from cclip_jax.run_folder import paths

CONFIG = "config.json"
HISTORY = "history.jsonl"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
EVAL = "eval"
REPORT = "report.html"

# Fields a resumed run may change (dotted prefixes): how long it runs, how often it logs,
# saves and evaluates, how it reads its data and prints; none changes what a step computes.
MAY_CHANGE_ON_RESUME = (
    "total_steps",
    "log_every_steps",
    "checkpoint_every_steps",
    "max_checkpoints",
    "async_checkpoints",
    "progress",
    "compilation_cache_dir",
    "init_from",
    "eval.",
    "data.prefetch",
    "data.cache_dir",
    "data.skip_corrupt_batches",
)

# Fields added after run folders were first written, each with the value that computes what
# the code did before it existed: a stored config without one reads as having that value, so
# a run written then still resumes (and a run that sets another value is a change).
ADDED_FIELDS = {
    "model.text.sticky_eos": False,
    "model.text.lowercase": False,
}


class ConfigChangedError(ValueError):
    """A resume whose config differs from the run's own in a field that may not change."""


def check_workdir(workdir: str) -> None:
    """Raises `paths.PathBackendError` (a ValueError: one line on the command line) when
    `workdir` is a URL this machine cannot write, e.g. gs:// without gcsfs installed."""
    paths.check(workdir)


def path(workdir: str, name: str) -> str:
    """`workdir/name` for one of this module's names (CONFIG, CHECKPOINTS, ...)."""
    return paths.join(workdir, name)


def eval_path(workdir: str, step: int) -> str:
    """`workdir/eval/step_XXXXXXXX.json`, the evaluation at `step`."""
    return paths.join(workdir, EVAL, f"step_{step:08d}.json")


def read_config(workdir: str) -> dict[str, Any] | None:
    """The run's stored config as a dict, or None when the folder has none."""
    try:
        return json.loads(paths.read_text(path(workdir, CONFIG)))
    except FileNotFoundError:
        return None


def write_config(workdir: str, config: Mapping[str, Any]) -> None:
    """`workdir/config.json`, atomically (a reader never sees half a file)."""
    paths.makedirs(workdir)
    paths.write_atomic(path(workdir, CONFIG), json.dumps(config, indent=1))


def append_history(workdir: str, event: str, **fields: Any) -> None:
    """One line in `workdir/history.jsonl`: the event, the time, and `fields`."""
    paths.makedirs(workdir)
    line = {
        "event": event,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **fields,
    }
    paths.append_text(path(workdir, HISTORY), json.dumps(line) + "\n")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            # JSON has no tuples: (1, 2) and [1, 2] are the same field value.
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """`(field, old, new)` for every dotted field that differs and may not change on resume
    (a field present on one side only counts as a change, shown as `<absent>`, unless it is
    one of `ADDED_FIELDS`, which reads as its old behaviour's value when absent)."""
    a, b = {**ADDED_FIELDS, **_flat(old)}, {**ADDED_FIELDS, **_flat(new)}
    missing = "<absent>"
    changes = []
    for field in sorted(set(a) | set(b)):
        if any(
            field == p or (p.endswith(".") and field.startswith(p)) for p in MAY_CHANGE_ON_RESUME
        ):
            continue
        if a.get(field, missing) != b.get(field, missing):
            changes.append((field, a.get(field, missing), b.get(field, missing)))
    return changes


def check_resume(
    workdir: str, new: Mapping[str, Any], *, force: bool = False
) -> list[tuple[str, Any, Any]]:
    """Checks a resume of `workdir` with the resolved config `new` (a dict, as written to
    config.json). Returns the changed fields (empty when none); raises `ConfigChangedError`
    naming each one unless `force`. Writes nothing: a forced change is recorded with
    `record_forced_change` once the restore has worked (by one process)."""
    old = read_config(workdir)
    if old is None:
        return []
    changes = config_changes(old, dict(new))
    if changes and not force:
        listed = "; ".join(f"{f}: {o!r} -> {n!r}" for f, o, n in changes)
        raise ConfigChangedError(
            f"{workdir} holds a run with another config ({listed}). Resume it with its own "
            "config, start a new run folder, or pass --force_config_change to resume with "
            "the new values (recorded in history.jsonl)."
        )
    return changes


def record_forced_change(workdir: str, changes: list[tuple[str, Any, Any]]) -> None:
    """Appends the `(field, old, new)` changes a forced resume made to the history."""
    append_history(
        workdir,
        "forced_config_change",
        changes=[{"field": f, "old": o, "new": n} for f, o, n in changes],
    )
