"""The v2 experiment's plots (matplotlib, Agg): learning curves and paired differences."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def save(fig: Any, out_dir: str, name: str) -> str:
    """Writes `fig` as `out_dir/name.png` and closes it; returns the path."""
    path = os.path.join(out_dir, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibration(body: Mapping[str, Any], out_dir: str) -> str:
    """Primary score (DEV) against steps, per width, preset and arm; T marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in body["records"]:
        run = r["run"]
        steps, scores = zip(*r["curve"], strict=True)
        ax.plot(
            steps,
            scores,
            label=f"{run['arm']} {run['preset']} D={run['width']}",
            ls="-" if run["width"] == body["decision"]["width"] else ":",
        )
    ax.axvline(body["decision"]["steps"], color="k", lw=0.8, label="T")
    ax.set(xlabel="step", ylabel="primary score (DEV)", title="Phase 0: calibration")
    ax.legend(fontsize=7)
    return save(fig, out_dir, "calibration")


def loss_curves(body: Mapping[str, Any], out_dir: str, name: str) -> str:
    """Training loss against steps per arm (mean over seeds), one panel."""
    by: dict[str, list[list[list[float]]]] = {}
    for r in body["records"]:
        by.setdefault(r["run"]["arm"], []).append(r["loss_curve"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm, curves in sorted(by.items()):
        n = min(len(c) for c in curves)
        steps = [s for s, _ in curves[0][:n]]
        ax.plot(steps, np.mean([[v for _, v in c[:n]] for c in curves], axis=0), label=arm)
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title=f"{name}: learning curves")
    ax.legend(fontsize=6, ncol=2)
    return save(fig, out_dir, f"{name}_loss")


def screen_scores(body: Mapping[str, Any], out_dir: str) -> str:
    """DEV primary score per arm (mean, and each seed)."""
    d = body["decision"]
    by: dict[str, list[float]] = {}
    for r in body["records"]:
        by.setdefault(r["run"]["arm"], []).append(r["primary"])
    arms = d["ranking"]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(arms) + 1.5))
    y = np.arange(len(arms))
    ax.barh(y, [d["dev_mean"][a] for a in arms], color="#9ecae1")
    for i, a in enumerate(arms):
        ax.plot(by[a], [i] * len(by[a]), "k.", ms=4)
    ax.set_yticks(y, arms, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="primary score (DEV)", title="Phase 1: screening")
    return save(fig, out_dir, "screen")


def differences(
    body: Mapping[str, Any],
    out_dir: str,
    min_effect: float,
    title: str = "Phase 2",
    name: str = "confirm_differences",
) -> str:
    """Paired differences (CCLIP arm - control) with their 95%, simultaneous and bootstrap
    intervals, one panel per preset of `body["decision"]`; writes `out_dir/name.png`."""
    presets = list(body["decision"])
    fig, axes = plt.subplots(1, len(presets), figsize=(6 * len(presets), 4), squeeze=False)
    for ax, preset in zip(axes[0], presets, strict=True):
        rows = [
            (f"{a} - {c}", v)
            for a, vs in body["decision"][preset]["versus"].items()
            for c, v in vs.items()
        ]
        for i, (_, v) in enumerate(rows):
            d, s = v["diff"], v["diff_simultaneous"]
            ax.plot([s["lo"], s["hi"]], [i, i], color="#bbb", lw=6)
            ax.plot([d["lo"], d["hi"]], [i, i], color="#3182bd", lw=2)
            if "bootstrap" in v:
                b = v["bootstrap"]
                ax.plot([b["lo"], b["hi"]], [i + 0.2] * 2, color="#e6550d", lw=1)
            ax.plot(d["mean"], i, "ko", ms=4)
        ax.axvline(0, color="k", lw=0.8)
        ax.axvline(min_effect, color="g", lw=0.8, ls="--")
        ax.set_yticks(range(len(rows)), [r for r, _ in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set(
            xlabel="Δ primary score (grey: simultaneous, blue: 95% t, orange: bootstrap)",
            title=f"{title}, {preset}",
        )
    return save(fig, out_dir, name)


def small_batches(body: Mapping[str, Any], out_dir: str) -> str:
    d = body["decision"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bs = list(d["per_batch_size"])
    for i, b in enumerate(bs):
        v = d["per_batch_size"][b]["diff"]
        ax.plot([v["lo"], v["hi"]], [i, i], color="#3182bd", lw=2)
        ax.plot(v["mean"], i, "ko", ms=4)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(bs)), [f"B={b}" for b in bs])
    ax.set(xlabel=f"Δ primary, {d['arm']} - {d['baseline']} (95% t)", title="Phase 3")
    return save(fig, out_dir, "small_batches")


def draw_all(results: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    ph, out = results["phases"], {}
    if "calibrate" in ph:
        out["calibration"] = calibration(ph["calibrate"], out_dir)
    if "screen" in ph:
        out["screen"] = screen_scores(ph["screen"], out_dir)
        out["screen_loss"] = loss_curves(ph["screen"], out_dir, "screen")
    if "confirm" in ph:
        out["confirm_differences"] = differences(
            ph["confirm"], out_dir, results["config"]["prereg"]["min_effect"]
        )
        out["confirm_loss"] = loss_curves(ph["confirm"], out_dir, "confirm")
    if "small" in ph:
        out["small_batches"] = small_batches(ph["small"], out_dir)
    return out
