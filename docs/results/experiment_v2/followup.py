"""Follow-up runs of experiment v2, after its phases: the curated-batch confound.

    python docs/results/experiment_v2/followup.py --workdir=DIR --part=natural_batches
    python docs/results/experiment_v2/followup.py --workdir=DIR --part=clean_curve
    python docs/results/experiment_v2/followup.py --workdir=DIR --part=natural_curve
    python docs/results/experiment_v2/followup.py --workdir=DIR --part=natural_long
    python docs/results/experiment_v2/followup.py --workdir=DIR --part=clean_long
    python docs/results/experiment_v2/followup.py --workdir=DIR --part=plots

Not part of the pre-registered phases and not decided on: these runs ask whether the curated
batches, rather than the conditional objective, explain the confirmation (README "Follow-up").
Each run trains with the harness's own `runs.execute` (same configs, same resume-by-record) in
`DIR/runs/followup/...`; DIR/cache holds the same world and curation as the experiment's.

Parts:
  natural_batches  SigLIP on random batches, natural captions, TEST items, the confirmation's
                   seeds, T and D: paired against the confirmation's `siglip_curated` (same
                   seeds, same objective; only the batches differ).
  clean_curve      `siglip_curated` on clean captions, three times T, with the primary score on
                   the DEV items every T/3 steps: do curated clean batches learn late, or never?
                   Beside it, SigLIP on random clean batches with the same schedule.
  natural_curve    the same on natural captions, for the confirmation's decisive arms:
                   `siglip_curated` and `cclip` (curated batches) and `negclip` (random).
  natural_long     the decisive comparison again at a training length T' at which every arm
                   of `natural_curve` is at plateau on the DEV items (the calibration's rule:
                   the last arm's first step after which its smoothed curve stays within
                   0.02 of its best; needs `natural_curve`'s records in DIR): `cclip` against
                   `negclip` and `siglip_curated`, TEST items, the confirmation's seeds, with
                   the pre-registered score and rule (verdict.confirm). Writes DIR/long.json.
  clean_long       the same on clean captions, with T' from `clean_curve` (siglip_curated and
                   SigLIP; needs its records in DIR). Writes DIR/clean_long.json.
  plots            trains nothing: DIR/plots/followup_curves.png (the DEV curves of
                   `clean_curve` and `natural_curve`, with T and each T') and
                   followup_differences.png (the paired differences of each *_long.json).

Prints each part's comparison; records land in DIR/runs/followup/<preset>/<arm>/.../record.json.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os

from absl import app, flags, logging

from cclip_jax import cli
from cclip_jax.experiment import phases, runs, stats, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SEEDS = (100, 101, 102, 103, 104)  # the confirmation's (configs/experiment_v2.py)
T, D, B = 3750, 64, 64  # the calibration's decisions (results.md)

_WORKDIR = flags.DEFINE_string("workdir", None, "Follow-up folder.", required=True)
_PART = flags.DEFINE_enum(
    "part",
    None,
    ["natural_batches", "clean_curve", "natural_curve", "natural_long", "clean_long", "plots"],
    "Which runs.",
)


def experiment_config():
    spec = importlib.util.spec_from_file_location(
        "experiment_v2_config", os.path.join(ROOT, "configs", "experiment_v2.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


LONG_ARMS = ("cclip", "negclip", "siglip_curated")
# Each decision at plateau: its preset, the part whose DEV curves set T', and its output file.
LONG = {
    "natural_long": ("natural", "natural_curve", "long.json"),
    "clean_long": ("clean", "clean_curve", "clean_long.json"),
}


def long_steps(exp, workdir: str, curve_part: str) -> tuple[int, dict[str, int]]:
    """T': the latest per-arm plateau step of `curve_part`'s DEV curves, and each arm's."""
    tolerance = float(exp.calibrate.tolerance)
    per_arm = {}
    for run in plan(curve_part, exp, workdir):
        path = os.path.join(workdir, "runs", run.key, runs.RECORD)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: run --part={curve_part} first")
        with open(path) as f:
            curve = json.load(f)["curve"]
        steps, scores = zip(*curve, strict=True)
        per_arm[run.arm] = phases.plateau_step(steps, scores, tolerance)
    return max(per_arm.values()), per_arm


def plan(part: str, exp, workdir: str) -> list[runs.Run]:
    if part in LONG:
        preset, curve_part, _ = LONG[part]
        steps, _ = long_steps(exp, workdir, curve_part)
        test = int(exp.test_eval_seed)
        return [
            runs.Run("followup", preset, arm, s, steps, D, B, test)
            for arm in LONG_ARMS
            for s in SEEDS
        ]
    if part == "natural_batches":
        return [
            runs.Run("followup", "natural", "siglip", s, T, D, B, int(exp.test_eval_seed))
            for s in SEEDS
        ]
    preset, arms = {
        "clean_curve": ("clean", ("siglip_curated", "siglip")),
        "natural_curve": ("natural", ("siglip_curated", "cclip", "negclip")),
    }[part]
    # Three times T, the DEV items scored every T/3 steps; the seed of the confirmation's
    # lowest clean siglip_curated score.
    return [
        runs.Run("followup", preset, arm, 104, 3 * T, D, B, int(exp.dev_eval_seed), T // 3, True)
        for arm in arms
    ]


def confirm_records(preset: str, arm: str) -> dict[int, dict]:
    pattern = os.path.join(HERE, "runs", "confirm", preset, arm, "*", "seed*", runs.RECORD)
    out = {}
    for path in glob.glob(pattern):
        with open(path) as f:
            record = json.load(f)
        out[int(record["run"]["seed"])] = record
    return out


def report(part: str, records: list[dict], exp, workdir: str) -> None:
    if part in LONG:
        preset, curve_part, out = LONG[part]
        steps, per_arm = long_steps(exp, workdir, curve_part)
        exp = exp.copy_and_resolve_references()
        with exp.unlocked():
            exp.confirm.presets = (preset,)
        screen = {"cclip": ["cclip"], "controls": ["negclip", "siglip_curated"]}
        result = verdict.confirm(exp.to_dict(), records, screen)[preset]
        body = {"steps": steps, "plateau_per_arm": per_arm, preset: result}
        with open(os.path.join(workdir, out), "w") as f:
            json.dump(body, f, indent=1, default=float)
        print(f"{preset}, TEST items, T' = {steps} (DEV plateau per arm {per_arm})")
        for arm, row in result["table"].items():
            print(f"  {arm}: {row['mean']:.3f} ± {row['std']:.3f} (n={row['n']})")
        for control, v in result["versus"]["cclip"].items():
            d = v["diff"]
            print(f"  cclip - {control}: {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
        print(f"  verdict against {result['best_control']}: {result['verdicts']['cclip']}")
        return
    if part == "natural_batches":
        curated = confirm_records("natural", "siglip_curated")
        seeds = [r["run"]["seed"] for r in records]
        a = [r["primary"] for r in records]
        b = [curated[s]["primary"] for s in seeds]
        t = stats.paired_t(b, a)
        print(f"natural, TEST items, n={len(seeds)} seeds {seeds}")
        print("  siglip (random batches): " + ", ".join(f"{x:.3f}" for x in a))
        print("  siglip_curated (confirm): " + ", ".join(f"{x:.3f}" for x in b))
        print(
            f"  curated - random: {t['mean']:+.3f} [{t['lo']:+.3f}, {t['hi']:+.3f}] "
            f"(95% t, p = {t['p']:.3g})"
        )
        for key in ("iid/retrieval/t2i_r5", "iid/attribute_replace/accuracy"):
            t = stats.paired_t(
                [curated[s]["final"][key] for s in seeds], [r["final"][key] for r in records]
            )
            print(f"  {key}: curated - random {t['mean']:+.3f} [{t['lo']:+.3f}, {t['hi']:+.3f}]")
        return
    for r in records:
        curve = ", ".join(f"{step}: {score:.3f}" for step, score in r["curve"])
        loss = r["loss_curve"]
        print(f"{r['key']}: primary (DEV) at {curve}")
        print(f"  loss at {loss[0][0]}: {loss[0][1]}, {loss[len(loss) // 2]}, {loss[-1]}")


COLOURS = {"siglip_curated": "C0", "cclip": "C1", "negclip": "C2", "siglip": "C3"}  # both panels


def draw(exp, workdir: str) -> None:
    import matplotlib.pyplot as plt  # matplotlib only where plots are drawn

    from cclip_jax.experiment import plots

    out_dir = os.path.join(workdir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (preset, curve_part, _) in zip(axes, sorted(LONG.values()), strict=True):
        for run in plan(curve_part, exp, workdir):
            with open(os.path.join(workdir, "runs", run.key, runs.RECORD)) as f:
                steps, scores = zip(*json.load(f)["curve"], strict=True)
            ax.plot(steps, scores, marker=".", label=run.arm, color=COLOURS[run.arm])
        ax.axvline(T, color="k", lw=0.8, ls=":", label="T")
        ax.axvline(long_steps(exp, workdir, curve_part)[0], color="k", lw=0.8, label="T'")
        ax.set(xlabel="step (of a 3T schedule, seed 104)", title=f"{preset} captions, DEV items")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("primary score")
    print(plots.save(fig, out_dir, "followup_curves"))
    decision = {}
    for preset, _, out in LONG.values():
        path = os.path.join(workdir, out)
        if os.path.exists(path):
            with open(path) as f:
                decision[preset] = json.load(f)[preset]
    body = {"decision": decision}
    print(plots.differences(body, out_dir, exp.prereg.min_effect, "At T'", "followup_differences"))


def main(argv: list[str]) -> None:
    del argv
    cli.quiet_libraries()
    logging.set_verbosity(logging.INFO)
    exp = experiment_config()
    if _PART.value == "plots":
        draw(exp, _WORKDIR.value)
        return
    cli.setup_process(exp.base)
    records = []
    for run in plan(_PART.value, exp, _WORKDIR.value):
        records.append(runs.execute(exp, _WORKDIR.value, run))
        logging.info("followup %s: primary %.3f", run.key, records[-1]["primary"])
    report(_PART.value, records, exp, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
