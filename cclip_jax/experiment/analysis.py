"""From per-run evaluation results to the experiment's table, sweep and summary.

A run's results (`DIR/eval/step_*.json` `results`) are flattened to metric keys
`<split>/<kind>/<metric>` (`compositional/attribute_swap/accuracy`,
`iid/group_relation/group`, `iid/retrieval/i2t_r1`, `iid/cond_retrieval/colour_shape_p1`).
Across seeds each key gets `{"mean", "std", "values", "n_seeds"}` (std with ddof=1; 0 for one
seed). The summary compares arms pairwise and says which differences exceed the seed spread,
by the stated rule `|mean_a - mean_b| > std_a + std_b`, and (every arm being scored on the
same finite item set) by more than twice the binomial noise of a difference on that many items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# What the summary talks about: binding kinds whose captions share their words (a bag of
# words cannot solve them), their groups, and the controls.
HEADLINE_KINDS = (
    "attribute_swap",
    "size_swap",
    "relation_flip",
    "relation_replace",
    "object_replace",
    "attribute_replace",
)
GROUP_KINDS = ("group_attribute", "group_size", "group_relation")


def flatten(results: Mapping[str, Any]) -> dict[str, float]:
    """Eval results by key -> `{"<split>/<kind>/<metric>": value}` (errors are skipped)."""
    out = {}
    for key, value in results.items():
        family, *rest = key.split("/")
        if "metrics" not in value:
            continue
        if family == "binding":
            prefix = "/".join(rest)
        elif family in ("retrieval", "cond_retrieval") and rest:
            split = rest[0].removeprefix("synthetic_")
            prefix = f"{split}/{family}"
        else:
            continue
        for metric, v in value["metrics"].items():
            out[f"{prefix}/{metric}"] = float(v)
    return out


def aggregate(per_seed: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Flattened results of several seeds -> per key mean, std (ddof=1), values, n_seeds."""
    keys = sorted(set().union(*per_seed)) if per_seed else []
    out = {}
    for key in keys:
        values = [float(r[key]) for r in per_seed if key in r]
        arr = np.asarray(values)
        out[key] = {
            "mean": float(arr.mean()),
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "values": values,
            "n_seeds": len(values),
        }
    return out


def headline_keys(splits: Iterable[str]) -> list[str]:
    """The keys the summary and the bar charts use, per evaluation split."""
    keys = []
    for split in splits:
        keys += [f"{split}/{k}/accuracy" for k in HEADLINE_KINDS]
        keys += [f"{split}/{k}/group" for k in GROUP_KINDS]
    return keys


def item_noise(key: str, n_items: int) -> float:
    """Binomial standard error of a score on `n_items` items at chance: what two runs evaluated
    on the same finite item set may differ by even when the seeds agree closely."""
    c = CHANCE.get(key.rsplit("/", 1)[1], 0.5)
    return float(np.sqrt(c * (1 - c) / max(n_items, 1)))


def exceeds(a: Mapping[str, Any], b: Mapping[str, Any], noise: float = 0.0) -> bool:
    """The rule: the difference of means is larger than the sum of the seed std's, and larger
    than twice the item-sampling noise of a difference (`noise · √2`), so that two or three
    seeds that happen to agree do not make a difference of a few items look real."""
    diff = abs(a["mean"] - b["mean"])
    return diff > a["std"] + b["std"] and diff > 2 * np.sqrt(2) * noise


def summarize(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]],
    keys: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    label: str,
    n_items: int,
) -> list[str]:
    """Sentences for every `(arm_a, arm_b)` comparison and key whose difference exceeds the
    seed spread (`exceeds`), then one line counting the comparisons that do not.

    `table`: arm -> key -> aggregate (one preset or batch size, named by `label`);
    `n_items`: items per key (the noise floor of `exceeds`).
    """
    lines, quiet = [], 0
    for a, b in pairs:
        if a not in table or b not in table:
            continue
        for key in keys:
            if key not in table[a] or key not in table[b]:
                continue
            ra, rb = table[a][key], table[b][key]
            if exceeds(ra, rb, item_noise(key, n_items)):
                diff = ra["mean"] - rb["mean"]
                lines.append(
                    f"[{label}] {key}: {a} {ra['mean']:.3f} ± {ra['std']:.3f} vs {b} "
                    f"{rb['mean']:.3f} ± {rb['std']:.3f} ({diff:+.3f}, "
                    f"{'above' if diff > 0 else 'below'}; exceeds the seed spread)"
                )
            else:
                quiet += 1
    lines.append(
        f"[{label}] {quiet} other comparisons of these arms differ by less than the "
        "seed spread or the item noise."
    )
    return lines


def chance_check(
    table: Mapping[str, Mapping[str, Any]], arm: str, keys: Sequence[str], label: str, n_items: int
) -> list[str]:
    """Keys where `arm`'s mean is above chance by more than its seed std plus twice the item
    noise (one line)."""
    above = [
        k
        for k in keys
        if k in table.get(arm, {})
        and table[arm][k]["mean"] - table[arm][k]["std"] - 2 * item_noise(k, n_items)
        > CHANCE[k.rsplit("/", 1)[1]]
    ]
    return [
        f"[{label}] {arm} is above chance (by more than its seed std + 2 item-noise SE) on "
        f"{len(above)} of {len(keys)} headline keys" + (f": {', '.join(above)}." if above else ".")
    ]


CHANCE = {"accuracy": 0.5, "text": 0.25, "image": 0.25, "group": 1 / 6}


def _cell(agg: Mapping[str, Any] | None) -> str:
    return "—" if agg is None else f"{agg['mean']:.3f} ± {agg['std']:.3f}"


def markdown(results: Mapping[str, Any], keys: Sequence[str]) -> str:
    """`results.md`: per preset a table (rows: `keys`, columns: arms, `mean ± std` over seeds),
    the batch-size sweep, and the summary, for pasting into a README."""
    arms = results["arms"]
    out = [f"# {results['title']}", ""]
    for preset in results["presets"]:
        out += [
            f"## `{preset}` captions, B={results['config']['batch_size']}, "
            f"{len(results['seeds'])} seeds",
            "",
            "| key | " + " | ".join(arms) + " |",
            "|---|" + "---:|" * len(arms),
        ]
        for key in keys:
            out.append(
                f"| {key} | "
                + " | ".join(_cell(results["table"][a][preset].get(key)) for a in arms)
                + " |"
            )
        out.append("")
    sweep = results["sweep"]
    if sweep:
        columns = [(a, b) for a in sweep for b in sweep[a]]
        out += [
            "## Batch-size sweep (`" + results["config"]["sweep"]["preset"] + "` captions)",
            "",
            "| key | " + " | ".join(f"{a} B={b}" for a, b in columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for key in keys:
            out.append(
                f"| {key} | " + " | ".join(_cell(sweep[a][b].get(key)) for a, b in columns) + " |"
            )
        out.append("")
    out += ["## Summary", ""] + [f"- {line}" for line in results["summary"]]
    return "\n".join(out) + "\n"
