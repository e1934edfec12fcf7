"""The evaluation section: the latest results by family, metrics over steps, retrieval rows.

Reads `DIR/eval/step_XXXXXXXX.json`, each `{"step", "image_root", "results": {key: entry}}` with
`key` = `family/split/kind` or `family/name` and `entry` = `{"metrics": {name: float}, "n",
"chance", "skipped", "skipped_examples", "truncated", "truncated_examples", "error", "rows"}`
(all optional; `rows`, for conditional retrieval, hold image paths relative to `image_root`).
Files that cannot be read are named on the page; an entry's problems are flagged in its row.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from cclip_jax import run_folder
from cclip_jax.report import plots
from cclip_jax.report.assets import Assets
from cclip_jax.report.html import (
    Markup,
    cell,
    figure,
    fmt,
    join,
    note,
    plot,
    plots_block,
    table,
    tag,
)
from cclip_jax.run_folder import paths as folder_paths

EVAL_DIR = run_folder.EVAL
# Conditional-retrieval rows shown per key, and results shown per row.
MAX_ROWS, MAX_RESULTS = 4, 6
# A family with more metric names than this gets its table transposed (metrics as rows), and at
# most MAX_FAMILY_PLOTS plots over steps (the overall metrics, whose names are the shortest).
MAX_COLUMNS, MAX_FAMILY_PLOTS = 8, 4


def _natural(name: str) -> list:
    """Sort key that puts p5 before p10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _split_key(key: str) -> tuple[str, str]:
    family, _, rest = key.partition("/")
    return family, rest or family


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    found = entry.get("metrics")
    if not isinstance(found, dict):
        return {}
    return {
        k: v for k, v in found.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def load_evals(workdir: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The evaluations of a run sorted by step, and a message per file that could not be read.

    Returns:
      `([{"step": int, "image_root": str | None, "results": {key: entry}, "file": name}],
      [problem])`.
    """
    evals, problems = [], []
    for path in folder_paths.glob(run_folder.path(workdir, EVAL_DIR), "step_*.json"):
        name = folder_paths.basename(path)
        try:
            record = json.loads(folder_paths.read_text(path))
            match = re.search(r"\d+", name)
            step = int(record.get("step", match.group() if match else -1))
            if not isinstance(record.get("results"), dict):
                raise ValueError('no "results" object')
        except (OSError, ValueError, TypeError, AttributeError) as e:
            problems.append(f"{name}: {e}")
            continue
        # A malformed entry still gets its row, flagged, instead of hiding the whole file.
        results = {
            str(k): v if isinstance(v, dict) else {"malformed": True}
            for k, v in record["results"].items()
        }
        evals.append(
            {"step": step, "image_root": record.get("image_root"), "results": results, "file": name}
        )
    evals.sort(key=lambda e: e["step"])
    return evals, problems


def _clip(text: str, width: int = 70) -> str:
    """The start and the end of a long example (a path, then what was wrong with it)."""
    return text if len(text) <= width else f"{text[: width // 3]}…{text[-(2 * width) // 3 :]}"


def _notes(entry: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What went wrong or was left out, in words: an error, skipped items, truncated texts
    (with the first example of each, clipped), and every example given, for a hover title."""
    out = ["malformed entry (not an object)"] if entry.get("malformed") else []
    if entry.get("error"):
        out.append(f"error: {entry['error']}")
    everything = []
    for what in ("skipped", "truncated"):
        count, examples = entry.get(what), entry.get(f"{what}_examples")
        examples = [str(e) for e in examples] if isinstance(examples, list) else []
        if count or examples:
            more = f" (e.g. {_clip(examples[0])})" if examples else ""
            out.append(f"{what} {count or len(examples)}{more}")
            everything += [f"{what}: {e}" for e in examples]
    return out, everything


def _chance(entry: dict[str, Any]) -> str:
    chance = entry.get("chance")
    if isinstance(chance, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in chance.items())
    return fmt(chance) if chance is not None else ""


def _info_cells(entry: dict[str, Any]) -> list[Any]:
    """n, chance, and the notes cell (flagged when anything was skipped, cut or failed)."""
    notes, examples = _notes(entry)
    return [
        cell(fmt(entry.get("n")), "num"),
        _chance(entry),
        cell("; ".join(notes), "warn" if notes else None, title="\n".join(examples) or None),
    ]


def _family_table(entries: Sequence[tuple[str, dict[str, Any]]]) -> Markup:
    """One row per key with its metrics, n, chance and notes; a family with many metric names
    (per-type breakdowns) gets metrics as rows instead, and its n/chance/notes in a second
    table, so that neither grows wider than the page."""
    names = sorted({m for _, e in entries for m in _metrics(e)}, key=_natural)
    info_header = ["n", "chance", "skipped / notes"]
    if len(names) <= MAX_COLUMNS:
        return table(
            ["key", *names, *info_header],
            [
                [
                    cell(_split_key(k)[1], "key"),
                    *(cell(fmt(_metrics(e).get(m)), "num") for m in names),
                    *_info_cells(e),
                ]
                for k, e in entries
            ],
        )
    by_metric = table(
        ["metric", *(_split_key(k)[1] for k, _ in entries)],
        [
            [cell(m, "key"), *(cell(fmt(_metrics(e).get(m)), "num") for _, e in entries)]
            for m in names
        ],
    )
    info = table(
        ["key", *info_header],
        [[cell(_split_key(k)[1], "key"), *_info_cells(e)] for k, e in entries],
    )
    return join([by_metric, info])


def _family_series(evals: Sequence[dict[str, Any]], family: str) -> dict[tuple[str, str], list]:
    """`{(key rest, metric): [steps, values]}` of one family over all evaluations."""
    series: dict[tuple[str, str], list] = {}
    for ev in evals:
        for key, entry in ev["results"].items():
            fam, rest = _split_key(key)
            if fam != family:
                continue
            for name, value in _metrics(entry).items():
                xs, ys = series.setdefault((rest, name), [[], []])
                xs.append(ev["step"])
                ys.append(value)
    return series


def _mean_by_split(lines: list[tuple[str, list, list]]) -> list[tuple[str, list, list]]:
    """Lines of `split/kind` keys averaged over the kinds of each split, step by step: too many
    kinds for one plot, and the table beside it has every one."""
    groups: dict[str, dict[int, list[float]]] = {}
    for rest, xs, ys in lines:
        per_step = groups.setdefault(rest.split("/")[0], {})
        for x, y in zip(xs, ys, strict=True):
            per_step.setdefault(x, []).append(y)
    kinds = {split: sum(rest.split("/")[0] == split for rest, _, _ in lines) for split in groups}
    return [
        (
            split if kinds[split] == 1 else f"{split} (mean of {kinds[split]})",
            sorted(per_step),
            [sum(v) / len(v) for _, v in sorted(per_step.items())],
        )
        for split, per_step in groups.items()
    ]


def _family_plots(
    evals: Sequence[dict[str, Any]], family: str, assets: Assets
) -> tuple[list[Markup], int]:
    """The family's metrics over steps, and how many metric names were left to the table.

    One plot if the family has few lines; else one per metric name (at most
    `MAX_FAMILY_PLOTS`, shortest names first: the overall metrics before per-type breakdowns),
    whose lines are the keys or, when there are too many keys, their means per split. Plots
    still over `plots.MAX_LINES` lines are cut into several.
    """
    series = _family_series(evals, family)
    left = 0
    if len(series) <= plots.MAX_LINES:
        groups = [(family, [(f"{rest}/{m}", *xy) for (rest, m), xy in series.items()])]
    else:
        by_metric: dict[str, list] = {}
        for (rest, m), xy in series.items():
            by_metric.setdefault(m, []).append((rest, *xy))
        names = sorted(by_metric, key=lambda m: (len(m), _natural(m)))
        left = max(len(names) - MAX_FAMILY_PLOTS, 0)
        groups = []
        for m in names[:MAX_FAMILY_PLOTS]:
            lines = by_metric[m]
            many = len(lines) > plots.MAX_LINES
            groups.append(
                (
                    f"{family}: {m}" + (" by split" if many else ""),
                    _mean_by_split(lines) if many else lines,
                )
            )
    out = []
    for title, lines in groups:
        chunks = [lines[i : i + plots.MAX_LINES] for i in range(0, len(lines), plots.MAX_LINES)]
        for i, chunk in enumerate(chunks):
            name = title if len(chunks) == 1 else f"{title} ({i + 1}/{len(chunks)})"
            path, src = assets.new(f"eval_{len(out)}", ".png")
            plots.line_plot(path, chunk, title=name, logy=False)
            out.append(plot(src, name))
    return out, left


def _result_figure(res: Any, root: str, assets: Assets) -> Markup:
    relevant = res.get("relevant")
    mark, cls = {True: ("✓", "px hit"), False: ("✗", "px miss")}.get(relevant, ("?", "px"))
    src = assets.add_file(os.path.join(root, str(res["image"])), "cr")
    return figure(src, f"{mark} {fmt(res.get('score'))}", cls)


def _retrieval_rows(key: str, rows: list, root: str, assets: Assets) -> list[Markup]:
    """A strip per row: the query image, the concept, then the top results, framed green when
    relevant and red when not."""
    out: list[Markup] = [
        tag("h3", f"{key}: query image, concept, top results"),
        tag(
            "p",
            "Frames: blue = the query; green ✓ = relevant (the concept holds), red ✗ = "
            "not relevant. Numbers are gated similarities to the query.",
        ),
    ]
    bad = 0
    for row in rows[:MAX_ROWS]:
        try:
            query = assets.add_file(os.path.join(root, str(row["query"])), "cr")
            parts = [
                figure(query, "query", "px query"),
                tag(
                    "div",
                    join([row.get("concept", ""), tag("small", row.get("type", ""))], "<br>"),
                    cls="concept",
                ),
                *(_result_figure(r, root, assets) for r in row["results"][:MAX_RESULTS]),
            ]
        except (KeyError, TypeError, AttributeError):
            bad += 1
            continue
        out.append(tag("div", join(parts), cls="strip"))
    if len(rows) > MAX_ROWS:
        out.append(note(f"{len(rows) - MAX_ROWS} more rows in the evaluation file."))
    if bad:
        out.append(note(f"{bad} rows without a query image or results list were left out."))
    return out


def eval_section(workdir: str, assets: Assets) -> list[Markup]:
    """The body of the report's evaluation section (notes when there is nothing to show)."""
    evals, problems = load_evals(workdir)
    out: list[Markup] = []
    if problems:
        out.append(note("Evaluation files that could not be read: " + "; ".join(problems)))
    if not evals:
        out.append(
            note(
                f"No evaluation yet: {run_folder.path(workdir, EVAL_DIR)} holds no step_*.json "
                "file."
            )
        )
        return out
    latest = evals[-1]
    out.append(
        tag(
            "p",
            f"Latest evaluation: step {latest['step']} ({EVAL_DIR}/{latest['file']}); "
            f"{len(evals)} evaluation(s) in all.",
        )
    )
    families = list(
        dict.fromkeys(_split_key(k)[0] for ev in reversed(evals) for k in ev["results"])
    )
    for family in families:
        entries = [(k, e) for k, e in latest["results"].items() if _split_key(k)[0] == family]
        out.append(tag("h3", family))
        out.append(
            _family_table(entries)
            if entries
            else note(f"No {family} results at step {latest['step']}.")
        )
    out.append(tag("h3", "Metrics over steps"))
    if len(evals) < 2:
        out.append(note("Plots over steps appear from the second evaluation on."))
    else:
        figs, left = [], []
        for family in families:
            family_figs, n_left = _family_plots(evals, family, assets)
            figs += family_figs
            if n_left:
                left.append(f"{family} ({n_left})")
        out.append(plots_block(figs))
        if left:
            out.append(note("Metrics in the tables only, not plotted: " + ", ".join(left) + "."))
    root = latest["image_root"] or workdir
    for key, entry in latest["results"].items():
        if isinstance(entry.get("rows"), list) and entry["rows"]:
            out.extend(_retrieval_rows(key, entry["rows"], str(root), assets))
    return out
