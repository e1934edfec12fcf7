"""The statistics of the v2 experiment: paired-by-seed intervals, a bootstrap, Holm, the rule.

Every comparison is of two arms trained with the same seeds (the same data order and the same
initialisation per seed) and scored on the same evaluation items:

- `paired_t`: the mean of the per-seed differences `d_s = a_s - b_s` with a Student-t interval
  (n - 1 degrees of freedom) and the two-sided p-value of `mean d = 0`.
- `bootstrap_diff`: a percentile interval that also carries the item noise: each replicate
  draws the seeds (paired) and, per item set, the items (the same draw for both arms and every
  seed) with replacement, and recomputes the score of both arms.
- `holm`: Holm's step-down adjustment of the p-values of the arms carried into confirmation.
- `decide`: the pre-registered rule (configs/experiment_v2.py `prereg`), per arm: "support",
  "refutation" or "inconclusive".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sp_stats


def paired_t(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Paired t-interval of `mean(a - b)`: `[n], [n] -> {mean, lo, hi, sd, n, p}`.

    With n = 1 (or all differences equal) the interval is degenerate: lo = hi = mean when
    sd = 0, and NaN bounds and p when n < 2 (no spread to estimate from).
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.ndim != 1 or len(np.asarray(a)) != len(np.asarray(b)):
        raise ValueError(
            f"paired_t needs two [n] sequences of equal length, got {np.shape(a)} and {np.shape(b)}"
        )
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {
            "mean": mean,
            "lo": float("nan"),
            "hi": float("nan"),
            "sd": float("nan"),
            "n": n,
            "p": float("nan"),
        }
    sd = float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    if se == 0.0:
        return {
            "mean": mean,
            "lo": mean,
            "hi": mean,
            "sd": 0.0,
            "n": n,
            "p": 1.0 if mean == 0.0 else 0.0,
        }
    half = float(sp_stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * sp_stats.t.sf(abs(mean) / se, n - 1))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "sd": sd, "n": n, "p": p}


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values: `name -> p` -> `name -> min(1, max_{j<=i} (m - j) p_(j))`.

    An arm is significant at level α after the correction iff its adjusted p is below α. NaN
    p-values (too few seeds) stay NaN and count towards m.
    """
    names = sorted(pvalues, key=lambda k: (np.isnan(pvalues[k]), pvalues[k]))
    m = len(names)
    out, running = {}, 0.0
    for i, name in enumerate(names):
        p = pvalues[name]
        if np.isnan(p):
            out[name] = float("nan")
            continue
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out


def mean_of_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The primary score's form: the mean over item sets of each set's mean item score.
    `C x [S, N_c] -> [S]`."""
    return np.mean([np.asarray(p, np.float64).mean(axis=1) for p in parts], axis=0)


def _draw_counts(rng: np.random.Generator, reps: int, n: int) -> np.ndarray:
    """`[reps, n]`: how often each of n things is drawn in each of `reps` draws of n with
    replacement."""
    drawn = rng.integers(0, n, (reps, n)) + n * np.arange(reps)[:, None]
    return np.bincount(drawn.ravel(), minlength=reps * n).reshape(reps, n).astype(np.float64)


def bootstrap_diff(
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Percentile interval of `mean_of_parts(a) - mean_of_parts(b)` over seeds and items.

    Args:
      a, b: per item set (C of them: the primary score's components), the per-item scores of
        the two arms, `[S, N_c]`: S seeds, paired by index; N_c items, the same items in the
        same order for both arms and every seed.
      n_boot: replicates. Each draws S seeds (the same pairs for both arms) and, per item set,
        N_c items (the same items for both arms and every seed), with replacement.
      seed: of the resampling.

    Returns:
      `{mean, lo, hi, n_boot}`: the observed mean difference over seeds and the interval.
    """
    a = [np.asarray(x, np.float64) for x in a]
    b = [np.asarray(x, np.float64) for x in b]
    if len(a) != len(b) or not a:
        raise ValueError(
            f"bootstrap_diff needs the same (nonzero) number of item sets, got "
            f"{len(a)} and {len(b)}"
        )
    for c, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.shape != y.shape or x.ndim != 2 or x.shape[0] != a[0].shape[0]:
            raise ValueError(
                f"bootstrap_diff: item set {c} must be [S, N] in both arms with "
                f"S = {a[0].shape[0]}, got {x.shape} and {y.shape}"
            )
    s = a[0].shape[0]
    rng = np.random.default_rng(seed)
    # A replicate's mean over its drawn seeds and items is a weighted mean with the draw
    # counts as weights (the score is linear in the item scores): [R, S] and [R, N] counts.
    seed_counts = _draw_counts(rng, n_boot, s)
    reps = np.zeros(n_boot)
    for x, y in zip(a, b, strict=True):
        n = x.shape[1]
        item_counts = _draw_counts(rng, n_boot, n)
        reps += np.einsum("rs,sn,rn->r", seed_counts, x - y, item_counts) / (s * n)
    reps /= len(a)
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    return {
        "mean": float(np.mean(mean_of_parts(a) - mean_of_parts(b))),
        "lo": float(lo),
        "hi": float(hi),
        "n_boot": n_boot,
    }


def decide(
    diff: Mapping[str, float],
    adjusted_p: float,
    guards: Mapping[str, float],
    *,
    min_effect: float,
    guard_loss: float,
    alpha: float = 0.05,
) -> tuple[str, str]:
    """The pre-registered verdict for one arm against the best control: (verdict, reason).

    Args:
      diff: `paired_t` of the primary score, arm minus control, whose interval is at the
        simultaneous level (Bonferroni over the arms: `1 - alpha / m`).
      adjusted_p: the Holm-adjusted p-value of that difference.
      guards: guard key -> mean paired difference (the arm may not lose more than
        `guard_loss` on any of them).
      min_effect: the smallest effect of interest (0.03 of the primary score).

    Returns:
      "support" when the difference is significant after Holm (adjusted p < alpha), positive,
      at least `min_effect` on average, and no guard loses more than `guard_loss`;
      "refutation" when the upper bound of the interval is below `min_effect` (the effect, if
      any, is smaller than the smallest of interest); "inconclusive" otherwise.
    """
    mean, hi = diff["mean"], diff["hi"]
    lost = [k for k, v in guards.items() if v < -guard_loss]
    if adjusted_p < alpha and mean > 0 and mean >= min_effect and not lost:
        return "support", (
            f"Δ = {mean:+.3f} ≥ {min_effect:g}, Holm p = {adjusted_p:.3g} < "
            f"{alpha:g}, no guard loses more than {guard_loss:g}"
        )
    if hi < min_effect:
        return "refutation", (
            f"the interval's upper bound {hi:+.3f} is below the smallest "
            f"effect of interest {min_effect:g}"
        )
    why = []
    if not (adjusted_p < alpha and mean > 0):
        why.append(f"Holm p = {adjusted_p:.3g}")
    if mean < min_effect:
        why.append(f"Δ = {mean:+.3f} < {min_effect:g}")
    if lost:
        why.append("loses more than {:g} on {}".format(guard_loss, ", ".join(lost)))
    return "inconclusive", (
        f"the interval [{diff['lo']:+.3f}, {hi:+.3f}] reaches {min_effect:g}, but " + "; ".join(why)
    )


def summarize_arm(values: Sequence[float]) -> dict[str, Any]:
    """Mean, std (ddof=1) and n of one arm's per-seed scores."""
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "n": len(v),
        "values": [float(x) for x in v],
    }
