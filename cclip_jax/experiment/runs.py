"""One run of the v2 experiment: its spec, its training config, and the record it leaves.

A `Run` names everything that differs between runs (phase, caption preset, arm, seed, steps,
tower width, batch size, evaluation items). `execute` trains it with the ordinary trainer
(`cclip_jax.training.trainer.train_and_evaluate`) in `DIR/runs/<Run.key>` unless its
`record.json` exists, so a killed phase continues where it stopped. The record holds what the
analysis needs and nothing that must be re-read from the run folder: the final metrics, the
primary score's curve over the evaluated steps, the per-item scores of the primary and guard
item sets (`encode_items`), the times, and the training-loss curve.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from cclip_jax import run_folder
from cclip_jax.experiment import analysis, runner

RECORD = "record.json"
# Per-item expected scores are multiples of 1/24 (pair items 0, 1/2, 1; Winoground's group
# score averages 24 tie-break orders): one character each.
_UNITS = 24
_ALPHABET = "".join(chr(ord("A") + i) for i in range(_UNITS + 1))


@dataclasses.dataclass(frozen=True)
class Run:
    phase: str
    preset: str
    arm: str
    seed: int
    steps: int
    width: int
    batch_size: int
    eval_seed: int
    eval_every: int = 0  # 0: evaluate at the last step only
    binding_only: bool = False  # evaluate the binding suite of the primary splits only

    @property
    def key(self) -> str:
        return (
            f"{self.phase}/{self.preset}/{self.arm}/w{self.width}-b{self.batch_size}-"
            f"t{self.steps}-e{self.eval_seed}/seed{self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def set_width(model: ml_collections.ConfigDict, width: int) -> None:
    """Both towers and the embedding at `width` (MLP 4x, a head per 16 channels, at least 2)."""
    for tower in (model.image, model.text):
        tower.width = width
        tower.mlp_dim = 4 * width
        tower.num_heads = max(2, width // 16)
    model.embed_dim = width


def run_config(
    exp: ml_collections.ConfigDict, run: Run, cache_dir: str
) -> ml_collections.ConfigDict:
    """The training config of `run`: the arm's overrides (runner.ARMS) of `exp.base`, then what
    the run spec sets."""
    c = runner.arm_config(
        exp.base, run.arm, preset=run.preset, seed=run.seed, batch_size=run.batch_size
    )
    c.data.cache_dir = cache_dir
    c.data.synthetic.num_train = int(exp.num_train)
    c.data.synthetic.seed = int(exp.world_seed)
    c.total_steps = run.steps
    c.checkpoint_every_steps = run.steps
    c.log_every_steps = min(c.log_every_steps, run.steps)
    c.optim.warmup_steps = max(1, round(exp.warmup_frac * run.steps))
    if run.width != c.model.embed_dim:
        set_width(c.model, run.width)
    s = c.eval.synthetic
    s.seed = run.eval_seed
    c.eval.every_steps = run.eval_every
    if run.binding_only:
        s.splits = tuple(sorted({split for split, _, _ in exp.prereg.primary}))
        s.retrieval_images = s.cond_queries = 0
    return c


def encode_items(values: Sequence[float]) -> str:
    """Per-item scores (multiples of 1/24 in [0, 1]) -> one letter each."""
    units = np.rint(np.asarray(values, np.float64) * _UNITS).astype(int)
    if units.size and (
        units.min() < 0
        or units.max() > _UNITS
        or not np.allclose(units / _UNITS, values, atol=1e-4)
    ):
        raise ValueError("per-item scores must be multiples of 1/24 in [0, 1]")
    return "".join(_ALPHABET[u] for u in units)


def decode_items(text: str) -> np.ndarray:
    """The inverse of `encode_items`: `[N]` float64."""
    return np.asarray([_ALPHABET.index(ch) for ch in text], np.float64) / _UNITS


def item_keys(exp: ml_collections.ConfigDict) -> list[str]:
    """`<split>/<kind>/<metric>` of every item set kept per item (primary and guards)."""
    keys = [f"{s}/{k}/{m}" for s, k, m in exp.prereg.primary]
    return keys + [g for g in exp.prereg.guards if "/retrieval/" not in g]


def primary_score(flat: Mapping[str, float], primary: Sequence[Sequence[str]]) -> float:
    """The pre-registered primary score of one evaluation (flattened keys)."""
    keys = [f"{s}/{k}/{m}" for s, k, m in primary]
    missing = [k for k in keys if k not in flat]
    if missing:
        raise KeyError(f"primary score: evaluation lacks {', '.join(missing)}")
    return float(np.mean([flat[k] for k in keys]))


def _per_item(results: Mapping[str, Any], keys: Sequence[str]) -> dict[str, dict[str, str]]:
    out = {}
    for key in keys:
        split, kind, metric = key.split("/")
        entry = results.get(f"binding/{split}/{kind}", {}).get("per_item")
        if entry is not None:
            out[key] = {"ids": ",".join(entry["ids"]), "scores": encode_items(entry[metric])}
    return out


def _timing(metrics_path: str, steps: int) -> tuple[float, float, list[list[float]]]:
    """(steady training seconds: steps / the median logged rate, the first logged interval's
    time beyond steady training: compiling and starting the data, the loss curve)."""
    rates, logged, curve = [], [], []
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            rates.append(row["steps_per_s"])
            logged.append(row["step"])
            curve.append([row["step"], round(float(row["loss"]), 4)])
    # The first interval holds the compile and every interval after an evaluation its time.
    steady = float(np.median(rates[1:] if len(rates) > 1 else rates))
    first = logged[0] / rates[0] - logged[0] / steady
    return steps / steady, max(first, 0.0), curve


def execute(exp: ml_collections.ConfigDict, workdir: str, run: Run) -> dict[str, Any]:
    """Trains and evaluates `run` unless its record exists; returns the record."""
    path = os.path.join(workdir, "runs", run.key)
    record_path = os.path.join(path, RECORD)
    if os.path.exists(record_path):
        with open(record_path) as f:
            return json.load(f)
    from cclip_jax.curation import demo_data
    from cclip_jax.training import trainer  # JAX and the data stack only when something trains

    config = run_config(exp, run, os.path.join(workdir, "cache"))
    start = time.perf_counter()  # the run's wall time includes building its demo data
    config.data.curated_dir = demo_data.ensure_demo_data(config)
    trainer.train_and_evaluate(config, path)
    wall = time.perf_counter() - start
    evals = sorted(glob.glob(os.path.join(path, "eval", "step_*.json")))
    curve, final, eval_s = [], None, 0.0
    for f in evals:
        with open(f) as fh:
            body = json.load(fh)
        flat = analysis.flatten(body["results"])
        eval_s += sum(v.get("seconds", 0.0) for v in body["results"].values())
        curve.append([int(body["step"]), primary_score(flat, exp.prereg.primary)])
        if body["step"] == run.steps:
            final = body
    if final is None:
        raise RuntimeError(f"{path}: training ended without its final evaluation")
    train_s, start_s, loss_curve = _timing(run_folder.path(path, run_folder.METRICS), run.steps)
    flat = analysis.flatten(final["results"])
    record = {
        "run": run.to_dict(),
        "key": run.key,
        "primary": curve[-1][1],
        "curve": curve,
        "final": flat,
        "items": _per_item(final["results"], item_keys(exp)),
        "loss_curve": loss_curve,
        "wall_s": round(wall, 2),
        "train_s": round(train_s, 2),
        "eval_s": round(eval_s, 2),
        "first_step_s": round(start_s, 2),
        # Everything that is not steady training: data set-up, compiling, evaluating, saving.
        "overhead_s": round(max(wall - train_s, 0.0), 2),
    }
    tmp = record_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, record_path)  # a record is complete or absent
    return record
