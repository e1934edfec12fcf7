"""Matplotlib plots of the report, written as PNG files.

Figures are built with `matplotlib.figure.Figure` directly, never through `pyplot`: `savefig`
then renders with the Agg backend, with no global figure state and no display needed, so the
report can be written from a training process, a thread or a headless machine. Matplotlib is
imported on first use, so importing the report costs nothing until a plot is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# One line or bar per series; more than this per plot stops being readable (the default colour
# cycle has 10 colours), so callers split their series into several plots.
MAX_LINES = 8

Series = tuple[str, Sequence[float], Sequence[float]]  # (label, xs, ys)


def _figure(width: float = 5.6, height: float = 3.4) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def wants_log(values: Sequence[float]) -> bool:
    """True when positive values span more than ~2 decades (e.g. loss_cond ≫ loss_sig), so that
    a log axis keeps the small ones visible."""
    vals = _finite(values)
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > 50


def line_plot(
    path: str,
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
    logy: bool | None = None,
) -> Any:
    """One axes of lines, `(label, xs, ys)` each (NaN or None are gaps); `logy=None` decides
    from the data. A legend is drawn when there is more than one line. Returns the figure."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, xs, ys in series:
        ys = [math.nan if y is None else y for y in ys]
        # Markers make a run of one or a few evaluations visible at all.
        ax.plot(
            xs, ys, label=label, linewidth=1.4, marker="o" if len(xs) <= 30 else None, markersize=3
        )
    if logy if logy is not None else wants_log([y for _, _, ys in series for y in ys]):
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _legend(fig, ax, len(series))
    fig.savefig(path)
    return fig


def panel_plot(path: str, series: Sequence[Series], *, title: str, xlabel: str = "step") -> Any:
    """One axes per series, each with its own linear y range, x shared; returns the figure.

    For terms of different sizes on one subject: loss_cond (30-190) and loss_sig (~5) on one
    linear axis leave loss_sig a flat line, and their ratio is too small for `wants_log`."""
    cols = 1 if len(series) <= 3 else 2
    rows = -(-len(series) // cols)
    fig = _figure(5.6 if cols == 1 else 9.0, 0.7 + 1.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True).ravel()
    for ax in axes[len(series) :]:
        ax.set_visible(False)
    for ax, (label, xs, ys) in zip(axes, series, strict=False):
        ys = [math.nan if y is None else y for y in ys]
        ax.plot(
            xs, ys, label=label, linewidth=1.4, marker="o" if len(xs) <= 30 else None, markersize=3
        )
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(series) - cols : len(series)]:
        ax.set_xlabel(xlabel)
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path)
    return fig


def _legend(fig: Any, ax: Any, count: int) -> None:
    """A few entries fit inside the axes; more go under it, where they cover no line."""
    if count <= 3:
        ax.legend(fontsize=7)
    else:
        fig.legend(loc="outside lower center", ncols=2, fontsize=7)


def bar_plot(
    path: str,
    groups: Sequence[str],
    bars: Sequence[str],
    means: Mapping[tuple[str, str], float],
    stds: Mapping[tuple[str, str], float],
    *,
    title: str,
) -> None:
    """Grouped bars: one group per `groups` entry (x axis), one bar per `bars` entry within it,
    heights `means[(group, bar)]` with `stds` as error bars; absent pairs leave a gap."""
    fig = _figure(max(5.6, 1.2 + 0.35 * len(groups) * len(bars)), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / max(len(bars), 1)
    for j, bar in enumerate(bars):
        xs = [i + (j - (len(bars) - 1) / 2) * width for i in range(len(groups))]
        ys = [means.get((g, bar), math.nan) for g in groups]
        err = [stds.get((g, bar), 0.0) for g in groups]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=bar)
    ax.set_xticks(range(len(groups)), [_wrap(g) for g in groups], fontsize=8)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper center", ncols=min(len(bars), 4), fontsize=7)
    fig.savefig(path)


def sweep_plot(
    path: str,
    panels: Sequence[tuple[str, Mapping[str, tuple[list, list, list]]]],
    *,
    xlabel: str = "batch size",
) -> None:
    """Panels `(title, {line: (xs, means, stds)})`, two per row, with error bars and a log2 x
    axis ticked at the x values (batch sizes double); one legend for all panels."""
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig = _figure(5.2 * cols, 3.4 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, lines) in zip(axes, panels, strict=False):
        ticks = sorted({x for xs, _, _ in lines.values() for x in xs})
        for label, (xs, ys, err) in lines.items():
            ax.errorbar(xs, ys, yerr=err, label=label, marker="o", markersize=3, capsize=2)
        if ticks and min(ticks) > 0:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_title(_wrap(title, 40), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside upper center",
        ncols=min(len(panels[0][1]), 4),
        fontsize=7,
    )
    fig.savefig(path)


def _wrap(label: str, width: int = 22) -> str:
    """Breaks long slash-separated keys over lines at the slashes, for tick labels and titles."""
    lines, cur = [], ""
    for part in label.split("/"):
        piece = part if not cur else "/" + part
        if cur and len(cur) + len(piece) > width:
            lines.append(cur + "/")
            cur = part
        else:
            cur += piece
    return "\n".join([*lines, cur])
