"""The experiment report: `write_experiment_report(workdir, results)` writes `workdir/report.html`
from the `results.json` dict of `python -m cclip_jax.experiment`:

    {"title", "config", "arms", "presets", "seeds", "batch_sizes",
     "table": {arm: {preset: {key: {"mean", "std", "values", "n_seeds"}}}},
     "sweep": {arm: {str(batch_size): {key: {"mean", "std", "values", "n_seeds"}}}},
     "summary": [sentence], "runs": [{"arm", "preset", "seed", "batch_size", "wall_s",
     "workdir", "final"}], "wall_s", "headline": [key] (optional: the keys charted)}

Every metric is read as higher-is-better (accuracies, scores, recalls): the best mean of a row is
bold.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from cclip_jax.report import plots
from cclip_jax.report.assets import Assets
from cclip_jax.report.html import (
    Cell,
    Markup,
    cell,
    fmt,
    join,
    key_values,
    note,
    page,
    plot,
    plots_block,
    section,
    table,
    tag,
    write_page,
)
from cclip_jax.report.run import flatten

# Keys drawn in the bar charts and the sweep plot; all keys are in the tables.
NUM_HEADLINE = 4

Stat = dict[str, Any]  # {"mean", "std", "values", "n_seeds"}


def headline_keys(keys: Sequence[str], preferred: Sequence[str] | None = None) -> list[str]:
    """Up to `NUM_HEADLINE` keys to chart: `preferred` ones that exist, else the keys of the
    compositional split first (what the experiment is about), each group in table order."""
    chosen = [k for k in (preferred or ()) if k in keys]
    if chosen:
        return chosen[:NUM_HEADLINE]
    order = sorted(range(len(keys)), key=lambda i: ("compositional" not in keys[i], i))
    return [keys[i] for i in order[:NUM_HEADLINE]]


def _mean(stat: Stat | None) -> float:
    value = stat.get("mean") if isinstance(stat, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan


def _stat_cell(stat: Stat | None, best: bool, num_seeds: int) -> Cell:
    """`mean ± std`, with the seed count when some seeds are missing."""
    if not isinstance(stat, dict):
        return cell("—", "num")
    text = f"{fmt(stat.get('mean'))} ± {fmt(stat.get('std'))}"
    n = stat.get("n_seeds")
    if isinstance(n, int) and n < num_seeds:
        text += f" (n={n})"
    return cell(text, "num best" if best else "num", title=f"values: {stat.get('values')}")


def _stat_table(
    rows: Sequence[str],
    cols: Sequence[str],
    get: Callable[[str, str], Any],
    row_header: str,
    num_seeds: int,
) -> Markup:
    """Rows × columns of `mean ± std`; the highest mean of each row in bold."""
    body = []
    for row in rows:
        stats = [get(row, col) for col in cols]
        means = [_mean(s) for s in stats]
        top = max((m for m in means if not math.isnan(m)), default=math.nan)
        body.append(
            [
                cell(row, "key"),
                *(_stat_cell(s, m == top, num_seeds) for s, m in zip(stats, means, strict=True)),
            ]
        )
    return table([row_header, *cols], body)


def _dig(tree: Any, *path: str) -> Any:
    """`tree[p0][p1]...`, or None where any level is missing."""
    for p in path:
        tree = tree.get(p) if isinstance(tree, dict) else None
    return tree


def _preset_section(
    results: dict[str, Any], preset: str, arms: list[str], num_seeds: int, assets: Assets
) -> Markup:
    table_ = results.get("table", {})
    keys = list(dict.fromkeys(k for arm in arms for k in (_dig(table_, arm, preset) or {})))
    if not keys:
        return section(f"preset-{preset}", f"Preset: {preset}", note("No results for it."))
    get = lambda key, arm: _dig(table_, arm, preset, key)
    heads = headline_keys(keys, results.get("headline"))
    path, src = assets.new(f"bars_{preset}", ".png")
    plots.bar_plot(
        path,
        heads,
        arms,
        {(k, a): _mean(get(k, a)) for k in heads for a in arms},
        {(k, a): float(_dig(table_, a, preset, k, "std") or 0.0) for k in heads for a in arms},
        title=f"{preset}: mean ± std over seeds",
    )
    return section(
        f"preset-{preset}",
        f"Preset: {preset}",
        tag("p", f"Mean ± std over seeds; bold: the highest mean of the row ({len(keys)} keys)."),
        _stat_table(keys, arms, get, "key", num_seeds),
        plots_block([plot(src, f"{preset}: headline keys by arm")], wide=True),
    )


def _sweep_section(results: dict[str, Any], num_seeds: int, assets: Assets) -> Markup:
    sweep = results.get("sweep") or {}
    arms = [a for a in sweep if isinstance(sweep[a], dict) and sweep[a]]
    if not arms:
        return section("sweep", "Batch-size sweep", note("No batch-size sweep in the results."))
    sizes = sorted({int(b) for a in arms for b in sweep[a]})
    keys = list(dict.fromkeys(k for a in arms for per in sweep[a].values() for k in per))
    heads = headline_keys(keys, results.get("headline"))
    panels = []
    for key in heads:
        lines = {}
        for arm in arms:
            pts = [(b, _dig(sweep, arm, str(b), key)) for b in sizes]
            pts = [(b, s) for b, s in pts if isinstance(s, dict)]
            lines[arm] = (
                [b for b, _ in pts],
                [_mean(s) for _, s in pts],
                [float(s.get("std") or 0.0) for _, s in pts],
            )
        panels.append((key, lines))
    path, src = assets.new("sweep", ".png")
    plots.sweep_plot(path, panels)
    tables = [
        join(
            [
                tag("h3", key),
                _stat_table(
                    [str(b) for b in sizes],
                    arms,
                    lambda b, arm, key=key: _dig(sweep, arm, b, key),
                    "batch size",
                    num_seeds,
                ),
            ]
        )
        for key in heads
    ]
    return section(
        "sweep",
        "Batch-size sweep",
        plots_block([plot(src, "mean ± std by batch size")], wide=True),
        *tables,
    )


def _runs_section(workdir: str, runs: list[dict[str, Any]]) -> Markup:
    """The runs, each linked to its own report when it has one."""
    if not runs:
        return section("runs", "Runs", note("No runs listed in the results."))
    rows = []
    for run in runs:
        run_dir = os.path.join(workdir, str(run.get("workdir", "")))
        report = os.path.join(run_dir, "report.html")
        link = (
            tag("a", "report", href=os.path.relpath(report, workdir))
            if run.get("workdir") and os.path.exists(report)
            else "—"
        )
        numbers = (run.get("seed"), run.get("batch_size"), run.get("wall_s"))
        rows.append(
            [
                run.get("arm", "?"),
                run.get("preset", "?"),
                *(cell(fmt(x, fixed=False), "num") for x in numbers),
                link,
            ]
        )
    return section(
        "runs", "Runs", table(["arm", "preset", "seed", "batch size", "wall s", "report"], rows)
    )


def write_experiment_report(workdir: str, results: dict[str, Any]) -> str:
    """Writes `workdir/report.html` (and `workdir/report_files/`) for an experiment.

    Args:
      workdir: the experiment folder (created if needed); run `workdir`s in `results` are
        relative to it or absolute.
      results: the `results.json` dict (schema in this module's docstring); missing parts give
        notes, not errors.

    Returns:
      The path of `report.html`.
    """
    os.makedirs(workdir, exist_ok=True)
    assets = Assets(workdir)
    table_ = results.get("table") or {}
    arms = list(results.get("arms") or table_)
    presets = list(
        results.get("presets")
        or dict.fromkeys(p for a in table_.values() if isinstance(a, dict) for p in a)
    )
    num_seeds = len(results.get("seeds") or [])
    wall = results.get("wall_s")
    facts = [
        ("experiment folder", os.path.abspath(workdir)),
        ("arms", ", ".join(arms)),
        ("caption presets", ", ".join(presets)),
        ("seeds", ", ".join(map(str, results.get("seeds") or []))),
        ("batch sizes (sweep)", ", ".join(map(str, results.get("batch_sizes") or []))),
        ("wall time", f"{wall / 60:.1f} min" if isinstance(wall, int | float) else "—"),
        ("written", datetime.datetime.now().isoformat(timespec="seconds")),
    ]
    summary = results.get("summary") or []
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
        *(_preset_section(results, p, arms, num_seeds, assets) for p in presets),
        *([] if presets else [section("results", "Results", note("No results table."))]),
        _sweep_section(results, num_seeds, assets),
        _runs_section(workdir, list(results.get("runs") or [])),
        section(
            "config",
            "Config",
            tag(
                "details",
                join([tag("summary", f"{len(config)} fields"), key_values(sorted(config.items()))]),
            ),
        ),
    ]
    return write_page(workdir, page(results.get("title") or "cclip_jax experiment", *body))
