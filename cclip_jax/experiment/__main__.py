"""`python -m cclip_jax.experiment --config=configs/experiment_v2.py --workdir=DIR`.

Writes `DIR/results.json`, `DIR/results.md`, the runs under `DIR/runs/`, and `DIR/report.html`.
Re-running the command resumes: finished runs are read back, not retrained. A config with
`version = 2` (configs/experiment_v2.py) runs the phased experiment
(cclip_jax/experiment/experiment_v2.py); configs/experiment_binding.py the v1 grid
(cclip_jax/experiment/runner.py).
"""

from __future__ import annotations

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from cclip_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_libraries()
    absl_logging.set_verbosity(absl_logging.INFO)
    cli.run(cli.setup_process, _CONFIG.value.base)  # once: every run trains in this process
    if _CONFIG.value.get("version", 1) == 2:
        from cclip_jax.experiment import experiment_v2  # after flag parsing (Grain workers)

        results = cli.run(experiment_v2.run, _CONFIG.value, _WORKDIR.value)
    else:
        from cclip_jax.experiment import runner

        results = cli.run(runner.run_experiment, _CONFIG.value, _WORKDIR.value)
    print("\n".join(results["summary"]))
    print(
        f"wrote {_WORKDIR.value}/results.json and {_WORKDIR.value}/report.html "
        f"({results['wall_s']:.0f} s)"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
