"""Standalone evaluation: `python -m cclip_jax.evaluate --config=configs/demo.py --workdir=DIR`.

Evaluates the latest complete checkpoint of the training run in DIR (or `--step`), running what
the config's `eval` section asks for (override any field, e.g.
`--config.eval.sugarcrepe.json_dir=... --config.eval.sugarcrepe.image_dir=.../val2017`), and
writes `DIR/eval/step_XXXXXXXX.json` and `DIR/report.html`. The model and tokenizer come from
the run's own `DIR/config.json`. DIR may be a URL (`gs://bucket/run`, see docs/training.md).

With no checkpoint in DIR and `config.init_from` a SigLIP `.npz`, the `.npz` is evaluated
(towers from `config.model`, tokenizer from `config.data.tokenizer`) and written as step 0.

Exit status: 0 when every evaluation ran; 1 when one failed (a benchmark's files missing, its
config field empty, or a file not in the published format), after the others have run and
been written, with one line on stderr naming each failure.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from cclip_jax import cli, run_folder
from cclip_jax.run_folder import paths

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (its `eval` section).", lock_config=False
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training run folder (or an output folder).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["config", "workdir"])


def evaluate(config, workdir: str, step: int | None = None) -> str:
    """Runs the suite on a run's checkpoint (or `config.init_from`); returns the JSON path."""
    from cclip_jax.evaluation import scorer as scorer_lib
    from cclip_jax.evaluation import suite

    run_folder.check_workdir(workdir)  # a URL's missing package: one line, before the model
    has_run = paths.exists(run_folder.path(workdir, run_folder.CONFIG))
    if has_run:
        scorer, step = scorer_lib.ModelScorer.from_workdir(
            workdir, step, batch_size=config.eval.batch_size
        )
        run_config = scorer_lib.load_run_config(workdir)
        run_config.eval = config.eval  # what to evaluate comes from --config
    elif config.init_from.endswith(".npz"):
        if not config.data.tokenizer:
            raise ValueError(
                f"config.data.tokenizer must name the SentencePiece model of {config.init_from}"
            )
        scorer = scorer_lib.ModelScorer.from_siglip_npz(
            config.init_from, config, config.data.tokenizer, batch_size=config.eval.batch_size
        )
        run_config, step = config, 0
        paths.makedirs(workdir)
    else:
        raise FileNotFoundError(
            f"{workdir} is not a training run (no config.json) and "
            "config.init_from names no SigLIP .npz"
        )
    results, root = suite.run_suite(scorer, run_config)
    path = suite.write_results(workdir, step, results, root)
    print(f"step {step}: {suite.headline(results)}\nwrote {path}")
    if config.eval.report:
        from cclip_jax import report

        print(f"wrote {report.write_report(workdir)}")
    return path


def run(config, workdir: str, step: int | None = None) -> int:
    """`evaluate`, then the exit status: 1 if an evaluation recorded an error. A failure is
    not an exception in `evaluate` so that the evaluations that did run are still written,
    but a script or scheduler must see it."""
    from cclip_jax.evaluation import suite

    path = evaluate(config, workdir, step)
    results = json.loads(paths.read_text(path))["results"]
    failed = suite.failed(results)
    if failed:
        print(
            f"error: {len(failed)} evaluation(s) failed (the others are in {path}): "
            + "; ".join(f"{k}: {results[k]['error']}" for k in failed),
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    sys.exit(cli.run(run, _CONFIG.value, _WORKDIR.value, _STEP.value))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
