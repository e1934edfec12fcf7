"""`python -m cclip_jax.experiment --config=configs/experiment_binding.py --workdir=DIR`.

Writes `DIR/results.json` (per arm, caption preset and item kind: mean, std, seeds), the runs
under `DIR/runs/`, and `DIR/report.html`. Re-running the command resumes: finished runs are
read back, not retrained.
"""

from __future__ import annotations

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from cclip_jax import console
    from cclip_jax.experiment import runner  # after flag parsing (Grain workers)

    console.quiet_libraries()
    absl_logging.set_verbosity(absl_logging.INFO)
    results = runner.run_experiment(_CONFIG.value, _WORKDIR.value)
    print("\n".join(results["summary"]))
    print(f"wrote {_WORKDIR.value}/results.json and {_WORKDIR.value}/report.html "
          f"({results['wall_s']:.0f} s)")


if __name__ == "__main__":
    app.run(main)
