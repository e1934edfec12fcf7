"""The HTML report of a training run or of an experiment.

    from cclip_jax import report
    report.write_report(workdir)                      # -> workdir/report.html
    report.write_experiment_report(workdir, results)  # the experiment's results.json dict
    report.screenshot(html_path, png_path)            # headless Chromium

or `python -m cclip_jax.report --workdir=DIR`. Pages are single self-contained HTML files with
inline CSS and relative links to their PNGs in `DIR/report_files/`; no network, no JS library.
"""

from cclip_jax.report.browser import ChromiumNotFoundError, dump_dom, find_chromium, screenshot
from cclip_jax.report.experiment import write_experiment_report
from cclip_jax.report.run import write_report

__all__ = [
    "ChromiumNotFoundError",
    "dump_dom",
    "find_chromium",
    "screenshot",
    "write_experiment_report",
    "write_report",
]
