"""`DIR/report.html` of the v2 experiment: the summary, the plots, the config.

The tables are in `DIR/results.md` (cclip_jax/experiment/writeup.py); the page shows the
machine-written summary and the plots and links the rest.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

from cclip_jax.report.html import (
    join,
    key_values,
    note,
    page,
    plot,
    plots_block,
    section,
    tag,
    write_page,
)
from cclip_jax.report.run import flatten


def write(workdir: str, results: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """Writes `workdir/report.html`; `plots`: name -> PNG path. Returns the page's path."""
    o = results.get("overhead") or {}
    wall = results.get("wall_s")
    facts = [
        # No absolute folder: the page is written into the folder it describes, and a copy
        # committed or moved elsewhere must not name the machine it was made on.
        ("phases", ", ".join(results["phases"])),
        ("runs", str(o.get("runs", 0))),
        ("wall time of the runs", f"{o['wall_s'] / 60:.1f} min" if o else "—"),
        ("this call", f"{wall:.0f} s" if isinstance(wall, int | float) else "—"),
        ("tables", "results.md"),
        ("written", datetime.datetime.now().isoformat(timespec="seconds")),
    ]
    summary = results.get("summary") or []
    images = [plot(os.path.relpath(path, workdir), name) for name, path in plots.items()]
    config = flatten(results.get("config") or {})
    body = [
        section("overview", "Overview", key_values(facts)),
        section(
            "summary",
            "Summary",
            tag("ul", join(tag("li", s) for s in summary))
            if summary
            else note("No summary in the results."),
        ),
        section("plots", "Plots", plots_block(images, wide=True) if images else note("No plots.")),
        section(
            "config",
            "Config",
            tag(
                "details",
                join([tag("summary", f"{len(config)} fields"), key_values(sorted(config.items()))]),
            ),
        ),
    ]
    return write_page(workdir, page(results.get("title") or "cclip_jax experiment v2", *body))
