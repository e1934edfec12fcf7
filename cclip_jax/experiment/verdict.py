"""Phases 2 and 3 from their run records to the pre-registered verdicts (pure: no training).

`confirm` and `small` read only the records (cclip_jax/experiment/runs.py) and the config, so
`python -m cclip_jax.experiment.summarize DIR/results.json` recomputes them from the results
file alone. `exp` may be the ConfigDict or its dict from results.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cclip_jax.experiment import stats
from cclip_jax.experiment.runs import decode_items

# Secondary keys (reported, not decided on): relations (the masked-caption concepts'
# target), productivity, retrieval.
RELATION_KEYS = tuple(
    f"{s}/{k}/{m}"
    for s in ("iid", "compositional")
    for k, m in (
        ("relation_flip", "accuracy"),
        ("relation_replace", "accuracy"),
        ("group_relation", "group"),
    )
)
PRODUCTIVITY_KEYS = tuple(
    f"productivity/{k}/{m}"
    for k, m in (
        ("attribute_swap", "accuracy"),
        ("size_swap", "accuracy"),
        ("group_attribute", "group"),
        ("group_size", "group"),
    )
)
RETRIEVAL_KEYS = ("iid/retrieval/i2t_r5", "iid/retrieval/t2i_r5")
COND_SPLITS = ("iid", "compositional")


def _by_arm(
    records: Sequence[Mapping[str, Any]], preset: str
) -> dict[str, dict[int, Mapping[str, Any]]]:
    out: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in records:
        if r["run"]["preset"] == preset:
            out.setdefault(r["run"]["arm"], {})[r["run"]["seed"]] = r
    return out


def _values(
    runs: Mapping[int, Mapping[str, Any]], seeds: Sequence[int], key: str | None
) -> list[float]:
    """Per seed: the primary score (key None) or a final metric (NaN where absent)."""
    if key is None:
        return [float(runs[s]["primary"]) for s in seeds]
    return [float(runs[s]["final"].get(key, np.nan)) for s in seeds]


def _parts(
    runs: Mapping[int, Mapping[str, Any]], seeds: Sequence[int], keys: Sequence[str]
) -> list[np.ndarray]:
    """Per primary item set, `[S, N]` per-item scores; the items must be the same per seed."""
    parts = []
    for key in keys:
        ids = {runs[s]["items"][key]["ids"] for s in seeds}
        if len(ids) != 1:
            raise ValueError(f"{key}: the runs were scored on different items")
        parts.append(np.stack([decode_items(runs[s]["items"][key]["scores"]) for s in seeds]))
    return parts


def _mean_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean of the per-seed differences over the seeds where both have the key (else NaN)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d[~np.isnan(d)]
    return float(d.mean()) if len(d) else float("nan")


def _paired_keys(
    a_runs: Mapping[int, Mapping[str, Any]],
    b_runs: Mapping[int, Mapping[str, Any]],
    seeds: Sequence[int],
    keys: Sequence[str],
) -> dict[str, dict[str, float]]:
    """`paired_t` of each key both arms have on every seed (keys an evaluation lacks are left
    out)."""
    out = {}
    for key in keys:
        a, b = _values(a_runs, seeds, key), _values(b_runs, seeds, key)
        if not (np.isnan(a).any() or np.isnan(b).any()):
            out[key] = stats.paired_t(a, b)
    return out


def compare(
    a_runs: Mapping[int, Mapping[str, Any]],
    b_runs: Mapping[int, Mapping[str, Any]],
    exp: Mapping[str, Any],
    m: int,
    boot_seed: int = 0,
) -> dict[str, Any]:
    """Arm a against arm b, paired by seed: the primary difference (95% and simultaneous
    `1 - alpha/m` t-intervals, the bootstrap over seeds and items), the guards' differences,
    and the secondary keys' differences."""
    p = exp["prereg"]
    seeds = sorted(set(a_runs) & set(b_runs))
    a, b = _values(a_runs, seeds, None), _values(b_runs, seeds, None)
    keys = [f"{s}/{k}/{mm}" for s, k, mm in p["primary"]]
    out = {
        "n_seeds": len(seeds),
        "seeds": seeds,
        "diff": stats.paired_t(a, b, 0.95),
        "diff_simultaneous": stats.paired_t(a, b, 1 - p["alpha"] / max(m, 1)),
        "guards": {
            g: _mean_diff(_values(a_runs, seeds, g), _values(b_runs, seeds, g)) for g in p["guards"]
        },
        "secondary": _paired_keys(
            a_runs, b_runs, seeds, (*RELATION_KEYS, *PRODUCTIVITY_KEYS, *RETRIEVAL_KEYS)
        ),
    }
    if all(k in a_runs[s].get("items", {}) for k in keys for s in seeds):
        out["bootstrap"] = stats.bootstrap_diff(
            _parts(a_runs, seeds, keys),
            _parts(b_runs, seeds, keys),
            n_boot=p["n_boot"],
            seed=boot_seed,
        )
    return out


def gate_check(runs: Mapping[int, Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Conditional retrieval, gated against the plain cosine (p@1, paired by seed per split):
    a gate that does not beat the plain cosine has learned nothing the embedding lacked."""
    out = {}
    for split in COND_SPLITS:
        gated = _values(runs, seeds, f"{split}/cond_retrieval/p1")
        plain = _values(runs, seeds, f"{split}/cond_retrieval/plain_p1")
        if np.isnan(gated).any() or np.isnan(plain).any():
            continue
        d = stats.paired_t(gated, plain)
        d["beats_plain"] = bool(d["n"] > 1 and d["lo"] > 0)
        out[split] = d
    return out


def confirm(
    exp: Mapping[str, Any], records: Sequence[Mapping[str, Any]], screen: Mapping[str, Any]
) -> dict[str, Any]:
    """Phase 2: per preset, every arm's primary score; each CCLIP arm against every control
    and against the best control (the highest mean: the comparison hardest for CCLIP); Holm
    over the CCLIP arms; the pre-registered verdict on the pre-registered preset."""
    p = exp["prereg"]
    cclip, controls = list(screen["cclip"]), list(screen["controls"])
    m = len(cclip)
    out: dict[str, Any] = {}
    for preset in exp["confirm"]["presets"]:
        arms = _by_arm(records, preset)
        table = {
            a: stats.summarize_arm([r["primary"] for _, r in sorted(arms[a].items())])
            for a in (*cclip, *controls)
            if a in arms
        }
        best = max((c for c in controls if c in table), key=lambda c: table[c]["mean"])
        versus = {
            a: {c: compare(arms[a], arms[c], exp, m, boot_seed=i) for c in controls if c in arms}
            for i, a in enumerate(cclip)
            if a in arms
        }
        adjusted = stats.holm({a: versus[a][best]["diff"]["p"] for a in versus})
        verdicts = {}
        for a in versus:
            v = versus[a][best]
            verdicts[a] = dict(
                zip(
                    ("verdict", "reason"),
                    stats.decide(
                        v["diff_simultaneous"],
                        adjusted[a],
                        v["guards"],
                        min_effect=p["min_effect"],
                        guard_loss=p["guard_loss"],
                        alpha=p["alpha"],
                    ),
                    strict=True,
                )
            )
            verdicts[a]["holm_p"] = adjusted[a]
        gates = {a: gate_check(arms[a], sorted(arms[a])) for a in arms}
        out[preset] = {
            "table": table,
            "best_control": best,
            "versus": versus,
            "verdicts": verdicts,
            "overall": overall(verdicts),
            "gates": gates,
            "decides": preset == p["preset"],
        }
    return out


def overall(verdicts: Mapping[str, Mapping[str, Any]]) -> str:
    """The pre-registered verdict over the arms: "support" if any arm is supported,
    "refutation" if every arm is refuted, "inconclusive" otherwise."""
    found = [v["verdict"] for v in verdicts.values()]
    if "support" in found:
        return "support"
    if found and all(v == "refutation" for v in found):
        return "refutation"
    return "inconclusive"


def small(
    exp: Mapping[str, Any], records: Sequence[Mapping[str, Any]], screen: Mapping[str, Any]
) -> dict[str, Any]:
    """Phase 3: the CCLIP arm minus the baseline per batch size (paired by seed), and the
    difference of those differences between the smallest and the largest batch (the claim:
    curated small batches help more)."""
    sm = exp["small"]
    arm, base = screen["cclip"][0], sm["baseline"]
    per_b, deltas = {}, {}
    for b in sm["batch_sizes"]:
        recs = [r for r in records if r["run"]["batch_size"] == b]
        arms = _by_arm(recs, sm["preset"])
        seeds = sorted(set(arms.get(arm, {})) & set(arms.get(base, {})))
        a, c = _values(arms[arm], seeds, None), _values(arms[base], seeds, None)
        deltas[b] = dict(zip(seeds, np.subtract(a, c), strict=True))
        per_b[str(b)] = {
            "arm": stats.summarize_arm(a),
            "baseline": stats.summarize_arm(c),
            "diff": stats.paired_t(a, c),
            "steps": recs[0]["run"]["steps"],
        }
    lo_b, hi_b = min(sm["batch_sizes"]), max(sm["batch_sizes"])
    seeds = sorted(set(deltas[lo_b]) & set(deltas[hi_b]))
    interaction = stats.paired_t([deltas[lo_b][s] for s in seeds], [deltas[hi_b][s] for s in seeds])
    return {
        "arm": arm,
        "baseline": base,
        "per_batch_size": per_b,
        "interaction": {"small": lo_b, "large": hi_b, **interaction},
    }
