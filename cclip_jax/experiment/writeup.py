"""The v2 experiment's written outputs from results.json: summary lines, results.md, plots.

Everything here reads only the results dict (cclip_jax/experiment/experiment_v2.py), so the
outputs can be recomputed from results.json alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _ci(d: Mapping[str, float]) -> str:
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def _ms(s: Mapping[str, Any]) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})"


def overhead(results: Mapping[str, Any]) -> dict[str, Any]:
    """Share of the runs' time that is not steady training (set-up, compile, eval, saving)."""
    recs = [r for body in results["phases"].values() for r in body["records"]]
    if not recs:
        return {}
    wall = sum(r["wall_s"] for r in recs)
    over = sum(r["overhead_s"] for r in recs)
    ev = sum(r["eval_s"] for r in recs)
    per_phase = {}
    for name, body in results["phases"].items():
        w = sum(r["wall_s"] for r in body["records"])
        per_phase[name] = {
            "runs": len(body["records"]),
            "wall_s": round(w, 1),
            "share": round(sum(r["overhead_s"] for r in body["records"]) / max(w, 1e-9), 3),
        }
    # (records written before the first interval was timed have no `first_step_s`)
    timed = [r for r in recs if "first_step_s" in r]
    first = sum(r["first_step_s"] for r in timed)
    first_wall = sum(r["wall_s"] for r in timed)
    return {
        "runs": len(recs),
        "wall_s": round(wall, 1),
        "overhead_s": round(over, 1),
        "eval_s": round(ev, 1),
        "first_step_s": round(first, 1),
        "share": round(over / max(wall, 1e-9), 3),
        "eval_share": round(ev / max(wall, 1e-9), 3),
        "first_step_share": round(first / first_wall, 3) if timed else None,
        "per_phase": per_phase,
    }


def chance(primary: Sequence[Sequence[str]]) -> float:
    """The primary score of a scorer that ties everything: 1/2 per pair accuracy, 1/6 per
    group score."""
    return float(np.mean([1 / 6 if m == "group" else 0.5 for _, _, m in primary]))


def summary(results: Mapping[str, Any]) -> list[str]:
    """The machine-written sentences: each phase's decision, and per CCLIP arm its verdict."""
    ph, lines = results["phases"], []
    p = results["config"]["prereg"]
    if "calibrate" in ph:
        d = ph["calibrate"]["decision"]
        within = ", ".join(f"D={w}: {v:.3f}" for w, v in d["score_within_budget"].items())
        lines.append(
            f"Calibration (DEV items): tower width D={d['width']} (primary score within "
            f"the width-32 training time: {within}); T={d['steps']} steps"
            + (
                " (the curve still rose at its last step: not shown to be at plateau)"
                if d["plateau_at_last_step"]
                else " (the smoothed mean curve stays within "
                f"{results['config']['calibrate']['tolerance']:g} of its best after)"
            )
        )
    if "screen" in ph:
        d = ph["screen"]["decision"]
        top = ", ".join(f"{a} {d['dev_mean'][a]:.3f}" for a in d["ranking"][:5])
        lines.append(
            f"Screening (DEV items, {len(results['config']['screen']['seeds'])} seeds): "
            f"top {top}; carried to confirmation: {', '.join(d['cclip'])} against "
            f"{', '.join(d['controls'])}."
        )
    if "confirm" in ph:
        for preset, body in ph["confirm"]["decision"].items():
            role = "decides" if body["decides"] else "secondary, not decided on"
            best = body["best_control"]
            lines.append(
                f"Confirmation, {preset} captions ({role}), TEST items: best control "
                f"{best} {_ms(body['table'][best])}; overall verdict: "
                f"{body['overall'].upper()}."
            )
            for arm, v in body["verdicts"].items():
                c = body["versus"][arm][best]
                boot = c.get("bootstrap")
                lines.append(
                    f"[{preset}] {arm} - {best}: Δ = {_ci(c['diff'])} (95% t, n={c['n_seeds']} "
                    f"seeds), simultaneous {_ci(c['diff_simultaneous'])}"
                    + (f", bootstrap {_ci(boot)}" if boot else "")
                    + f", Holm p = {v['holm_p']:.3g}: {v['verdict'].upper()} ({v['reason']})."
                )
            for arm, g in body["gates"].items():
                for split, d in g.items():
                    if not d["beats_plain"]:
                        lines.append(
                            f"[{preset}] {arm}: gated conditional retrieval ({split}) "
                            f"does not beat the plain cosine (p@1 Δ {_ci(d)}): its "
                            "gate learned nothing the image embedding lacked."
                        )
    for preset, b in (results.get("blind") or {}).items():
        lines.append(
            f"Blind text-only bigram baseline, {preset} captions, TEST items: primary "
            f"{b['primary']:.3f} (chance {chance(p['primary']):.3f})."
        )
    if "small" in ph:
        d = ph["small"]["decision"]
        per = "; ".join(f"B={b}: Δ = {_ci(v['diff'])}" for b, v in d["per_batch_size"].items())
        i = d["interaction"]
        lines.append(
            f"Small batches ({d['arm']} - {d['baseline']}, equal examples seen, TEST "
            f"items): {per}; Δ(B={i['small']}) - Δ(B={i['large']}) = {_ci(i)} "
            f"(n={i['n']})."
        )
    o = results.get("overhead")
    if o:
        lines.append(
            f"Overhead (set-up, compile, evaluation, saving): {100 * o['share']:.1f}% of "
            f"the runs' {o['wall_s'] / 60:.0f} min over {o['runs']} runs: evaluation "
            f"{100 * o['eval_share']:.1f}%"
            + (
                ""
                if o["first_step_share"] is None
                else f", compiling and starting the first step {100 * o['first_step_share']:.1f}%"
            )
            + "."
        )
    lines.append(
        f"Rule (pre-registered): support = Holm-adjusted p < {p['alpha']:g} against the "
        f"best control with Δ ≥ {p['min_effect']:g} and no guard losing more than "
        f"{p['guard_loss']:g}; refutation = the simultaneous interval's upper bound "
        f"< {p['min_effect']:g}; otherwise inconclusive."
    )
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def markdown(results: Mapping[str, Any], plots: Mapping[str, str], workdir: str) -> str:
    """results.md: the pre-registration, each phase's tables, the summary, the plots."""
    cfg, ph = results["config"], results["phases"]
    p = cfg["prereg"]
    out = [
        f"# {results['title']}",
        "",
        f"World seed {cfg['world_seed']}, {cfg['num_train']} training pairs, batch "
        f"{cfg['batch_size']}, {cfg['num_items']} items per kind and split; DEV items: eval "
        f"seed {cfg['dev_eval_seed']}, TEST items: {cfg['test_eval_seed']}.",
        "",
        "Primary score: the mean of "
        + ", ".join(f"`{s}/{k}/{m}`" for s, k, m in p["primary"])
        + f" ({p['preset']} captions). Smallest effect of interest {p['min_effect']:g}.",
        "",
    ]
    out += ["## Summary", ""] + [f"- {line}" for line in results["summary"]] + [""]
    out += ["## Deviations from the pre-registration", ""]
    out += [f"- {d}" for d in cfg.get("deviations", ())] or ["None."]
    out += [""]
    if "calibrate" in ph:
        out += ["## Phase 0: calibration (DEV items)", ""]
        rows = [
            [
                r["run"]["width"],
                r["run"]["preset"],
                r["run"]["arm"],
                r["run"]["steps"],
                f"{max(s for _, s in r['curve']):.3f}",
                f"{r['primary']:.3f}",
                f"{r['train_s']:.0f}",
            ]
            for r in ph["calibrate"]["records"]
        ]
        out += _table(["D", "preset", "arm", "steps", "best", "last", "train s"], rows)
    if "screen" in ph:
        out += ["## Phase 1: screening (DEV items, natural captions)", ""]
        d, by = ph["screen"]["decision"], {}
        for r in ph["screen"]["records"]:
            by.setdefault(r["run"]["arm"], []).append(r["primary"])
        rows = [
            [
                a,
                f"{d['dev_mean'][a]:.3f}",
                f"{np.std(by[a], ddof=1):.3f}" if len(by[a]) > 1 else "—",
                len(by[a]),
                ", ".join(f"{v:.3f}" for v in by[a]),
            ]
            for a in d["ranking"]
        ]
        out += _table(["arm", "mean", "std", "n", "per seed"], rows)
    if "confirm" in ph:
        for preset, body in ph["confirm"]["decision"].items():
            out += [f"## Phase 2: confirmation, {preset} captions (TEST items)", ""]
            out += _table(
                ["arm", "primary (mean ± std, n seeds)"],
                [[a, _ms(s)] for a, s in body["table"].items()],
            )
            rows = []
            for arm, vs in body["versus"].items():
                for ctrl, c in vs.items():
                    boot = c.get("bootstrap")
                    verdict = (
                        body["verdicts"][arm]["verdict"] if ctrl == body["best_control"] else ""
                    )
                    rows.append(
                        [
                            arm,
                            ctrl,
                            _ci(c["diff"]),
                            _ci(c["diff_simultaneous"]),
                            _ci(boot) if boot else "—",
                            f"{c['diff']['p']:.3g}",
                            verdict,
                        ]
                    )
            out += _table(
                ["arm", "vs", "Δ [95% t]", "Δ [simultaneous]", "bootstrap", "p (raw)", "verdict"],
                rows,
            )
            best = body["best_control"]
            guards = sorted({k for vs in body["versus"].values() for k in vs[best]["guards"]})
            rows = [
                [k, *(f"{vs[best]['guards'][k]:+.3f}" for vs in body["versus"].values())]
                for k in guards
            ]
            out += [f"Guards, mean paired Δ against {best}:", ""]
            out += _table(["key", *body["versus"]], rows)
            keys = sorted({k for vs in body["versus"].values() for k in vs[best]["secondary"]})
            rows = [
                [
                    k,
                    *(
                        _ci(vs[best]["secondary"][k]) if k in vs[best]["secondary"] else "—"
                        for vs in body["versus"].values()
                    ),
                ]
                for k in keys
            ]
            out += [f"Secondary keys, paired Δ [95% t] against {best}:", ""]
            out += _table(["key", *body["versus"]], rows)
            rows = [
                [a, split, _ci(d), "yes" if d["beats_plain"] else "no"]
                for a, g in body["gates"].items()
                for split, d in g.items()
            ]
            if rows:
                out += ["Conditional retrieval p@1, gated minus plain cosine:", ""]
                out += _table(["arm", "split", "Δ [95% t]", "gate beats plain"], rows)
    if "small" in ph:
        d = ph["small"]["decision"]
        out += [f"## Phase 3: small batches ({d['arm']} vs {d['baseline']}, TEST items)", ""]
        rows = [
            [b, v["steps"], _ms(v["arm"]), _ms(v["baseline"]), _ci(v["diff"])]
            for b, v in d["per_batch_size"].items()
        ]
        out += _table(["B", "steps", d["arm"], d["baseline"], "Δ [95% t]"], rows)
    if plots:
        out += (
            ["## Plots", ""]
            + [f"![{name}]({os.path.relpath(path, workdir)})" for name, path in plots.items()]
            + [""]
        )
    return "\n".join(out)


def plots(results: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    """PNG plots: calibration curves, screening loss curves per arm, the paired differences
    with their intervals. Returns name -> path."""
    from cclip_jax.experiment import plots as plot_lib  # matplotlib only where plots are drawn

    return plot_lib.draw_all(results, out_dir)
