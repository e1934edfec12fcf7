"""`python -m cclip_jax.report --workdir=DIR`: writes DIR/report.html (and prints its path).

A folder with `results.json` and no `metrics.jsonl` is an experiment folder and gets the
experiment report; `--kind` overrides the guess. `--screenshot=PNG` also renders the page.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from cclip_jax import cli
from cclip_jax.report import screenshot, write_experiment_report, write_report
from cclip_jax.report.kind import RESULTS_FILE, report_kind
from cclip_jax.run_folder import paths as folder_paths

_WORKDIR = flags.DEFINE_string("workdir", None, "Run or experiment folder.", required=True)
_CURATED = flags.DEFINE_string(
    "curated_dir", None, "Curated data for the gallery (default: config.json's)."
)
_KIND = flags.DEFINE_enum(
    "kind",
    "auto",
    ["auto", "run", "experiment"],
    "Which report: auto = experiment if DIR/results.json exists and DIR/metrics.jsonl does not.",
)
_SCREENSHOT = flags.DEFINE_string("screenshot", None, "Also write a PNG screenshot here.")


def main(argv: list[str]) -> None:
    del argv
    workdir = _WORKDIR.value
    results_path = os.path.join(workdir, RESULTS_FILE)
    kind = cli.run(report_kind, workdir, _KIND.value)
    if kind == "experiment":
        if folder_paths.is_url(workdir):
            # The experiment harness writes local folders only (cclip_jax/experiment).
            cli.fail(f"--workdir={workdir}: an experiment report needs a local folder")
        with open(results_path) as f:
            results = json.load(f)
        if "phases" in results:  # the v2 experiment (cclip_jax/experiment/experiment_v2.py)
            from cclip_jax.experiment import experiment_v2

            experiment_v2.write_outputs(results, workdir)
            path = os.path.join(workdir, "report.html")
        else:
            path = write_experiment_report(workdir, results)
    else:
        path = cli.run(write_report, workdir, curated_dir=_CURATED.value)
    print(path)
    if _SCREENSHOT.value:
        print(screenshot(path, _SCREENSHOT.value))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
