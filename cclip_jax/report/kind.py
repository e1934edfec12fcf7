"""Which report a folder gets: a training run's or an experiment's."""

from __future__ import annotations

from cclip_jax.run_folder import paths as folder_paths
from cclip_jax.run_folder.metrics import METRICS_FILE

RESULTS_FILE = "results.json"  # written by the experiment harness (cclip_jax/experiment)


def report_kind(workdir: str, requested: str = "auto") -> str:
    """ "run" or "experiment": `requested`, or for "auto" the guess from `workdir`'s files.

    A folder with `results.json` and no `metrics.jsonl` is an experiment folder.
    """
    if requested != "auto":
        return requested
    # Through the path layer: a gs:// run folder is a run folder, not "no results.json here".
    results = folder_paths.exists(folder_paths.join(workdir, RESULTS_FILE))
    metrics = folder_paths.exists(folder_paths.join(workdir, METRICS_FILE))
    return "experiment" if results and not metrics else "run"
