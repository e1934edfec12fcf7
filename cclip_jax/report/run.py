"""The report of one training run: `write_report(workdir)` writes `workdir/report.html`.

It renders from whatever the run folder holds (`config.json`, `metrics.jsonl`, `eval/`,
`checkpoints/`) and says what is missing instead of failing, so it can be written at any point
of a run, or of a run that crashed. The run folder is read through `run_folder.paths`, so it
may be a URL (`gs://...`); the page and its PNGs (matplotlib writes local files) are then
rendered into a local temporary folder and copied up, the PNGs first.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Any

from cclip_jax import run_folder
from cclip_jax.report import plots
from cclip_jax.report.assets import FILES_DIR, Assets
from cclip_jax.report.evaluation import eval_section
from cclip_jax.report.gallery import gallery_section
from cclip_jax.report.html import (
    Markup,
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
from cclip_jax.run_folder import paths as folder_paths
from cclip_jax.run_folder.metrics import METRICS_FILE, read_jsonl

CONFIG_FILE = run_folder.CONFIG

# One plot per group: (title, keys, prefix, logy); it shows those of its keys the run logged,
# then any other logged key that starts with `prefix` (new loss terms, per-tower norms). `logy`
# None lets the data choose a log axis; False keeps it linear (a schedule decaying to ~0 is
# read on a linear axis); PANELS gives each key its own axes: loss_cond (30-190) is too close
# to loss_sig (~5) for a log axis to be chosen, and a shared linear one flattens loss_sig and
# the plain loss. Keys in no group are listed by name.
PANELS = "panels"
CURVE_GROUPS = (
    ("Loss terms", ("loss", "loss_sig", "loss_cond"), "loss_", PANELS),
    ("Learning rate", ("lr",), None, False),
    ("Gate entropy (normalised)", ("gate_entropy",), None, False),
    ("Mean gated logit: positive vs negative triples", ("logit_pos", "logit_neg"), None, False),
    ("Temperatures", ("scale", "cond_scale"), None, False),
    ("Biases", ("bias", "cond_bias"), None, False),
    ("Gradient and parameter norms", ("grad_norm", "param_norm"), "grad_norm_", None),
    (
        "Conditional triples per batch",
        ("triples_pos", "triples_neg", "triples_unknown"),
        "triples_",
        None,
    ),
    ("Throughput (examples/s)", ("examples_per_s",), None, None),
    ("Training steps per second", ("steps_per_s",), None, None),
)

# The config fields the header shows, when the config has them.
SUMMARY_FIELDS = (
    "loss",
    "cond_weight",
    "unknown_weight",
    "max_present",
    "batch_size",
    "total_steps",
    "seed",
    "model.image.variant",
    "model.image.image_size",
    "model.image.depth",
    "model.text.variant",
    "model.text.depth",
    "model.embed_dim",
    "model.gate",
    "model.dtype",
    "optim.lr",
    "data.mode",
    "data.curated_dir",
    "data.synthetic.preset",
)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys (a config that is already flat is unchanged)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_config(workdir: str) -> tuple[dict[str, Any] | None, str]:
    """`(flat config, "")` from `workdir/config.json`, or `(None, why not)`."""
    path = run_folder.path(workdir, CONFIG_FILE)
    try:
        config = json.loads(folder_paths.read_text(path))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return None, f"No {CONFIG_FILE} in the run folder: the config is unknown."
    except (OSError, ValueError) as e:
        return None, f"{path} could not be read: {e}"
    return flatten(config), ""


def _load_metrics(workdir: str) -> tuple[list[dict[str, Any]], str]:
    path = run_folder.path(workdir, METRICS_FILE)
    if not folder_paths.exists(path):
        return [], f"No training metrics yet: {path} does not exist."
    try:
        records = read_jsonl(path)
    except OSError as e:
        return [], f"{path} could not be read: {e}"
    except ValueError:
        # A line cut short (a run killed mid-write, or still writing): keep the good lines.
        lines = [line for line in folder_paths.read_text(path).splitlines() if line.strip()]
        records = [r for r in map(_parse_line, lines) if r is not None]
        if len(records) < len(lines):
            return _with_step(records), f"{len(lines) - len(records)} unreadable lines skipped."
    records = _with_step(records)
    return records, "" if records else f"No training metrics yet: {path} is empty."


def _parse_line(line: str) -> dict[str, Any] | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _with_step(records: list[Any]) -> list[dict[str, Any]]:
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int)]


def _checkpoint_steps(workdir: str) -> list[int]:
    folder = run_folder.path(workdir, run_folder.CHECKPOINTS)
    return sorted(int(n) for n in folder_paths.listdir(folder) if n.isdigit())


def _header(
    workdir: str, config: dict[str, Any] | None, why_no_config: str, records: list[dict[str, Any]]
) -> list[Markup]:
    ckpts = _checkpoint_steps(workdir)
    total = config.get("total_steps") if config else None
    last = records[-1]["step"] if records else None
    facts = [
        ("run folder", folder_paths.absolute(workdir)),
        (
            "last logged step",
            "none yet" if last is None else f"{last}" + (f" of {total}" if total else ""),
        ),
        ("checkpoints", ", ".join(map(str, ckpts)) if ckpts else "none"),
        ("written", datetime.datetime.now().isoformat(timespec="seconds")),
    ]
    out = [key_values(facts)]
    if config is None:
        out.append(note(why_no_config))
    else:
        out.append(tag("h3", "Config"))
        out.append(key_values((k, config[k]) for k in SUMMARY_FIELDS if k in config))
        out.append(
            tag(
                "details",
                join(
                    [
                        tag("summary", f"All {len(config)} config fields"),
                        key_values(sorted(config.items())),
                    ]
                ),
            )
        )
    if records:
        out.append(tag("h3", f"Last logged values (step {last})"))
        out.append(key_values(((k, v) for k, v in records[-1].items() if k != "step"), 4))
    return out


def _curves(records: list[dict[str, Any]], assets: Assets) -> list[Markup]:
    """One PNG per `CURVE_GROUPS` entry the run logged, plus a list of the keys not plotted."""
    logged = list(
        dict.fromkeys(
            k for r in records for k, v in r.items() if k != "step" and isinstance(v, int | float)
        )
    )
    used: set[str] = set()
    figs = []
    for title, group, prefix, logy in CURVE_GROUPS:
        keys = [k for k in group if k in logged]
        keys += [k for k in logged if prefix and k.startswith(prefix) and k not in group]
        if not keys:
            continue
        used.update(keys)
        series = []
        for k in keys:
            points = [(r["step"], r[k]) for r in records if isinstance(r.get(k), int | float)]
            series.append((k, [x for x, _ in points], [y for _, y in points]))
        path, src = assets.new(f"curve_{len(figs)}", ".png")
        if logy == PANELS:
            plots.panel_plot(path, series, title=title)
        else:
            plots.line_plot(path, series, title=title, logy=logy)
        figs.append(plot(src, title))
    out = [plots_block(figs)] if figs else []
    rest = [k for k in logged if k not in used]
    if rest:
        out.append(note("Also logged, not plotted: " + ", ".join(rest) + "."))
    return out


def _curated_dir(config: dict[str, Any] | None, curated_dir: str | None) -> tuple[str | None, str]:
    """The curated folder to show (`curated_dir` wins over the config), or why there is none."""
    if curated_dir:
        return curated_dir, ""
    if config is None:
        return None, "No gallery: no config.json names the curated data (pass curated_dir=)."
    if config.get("data.curated_dir"):
        return os.path.expanduser(str(config["data.curated_dir"])), ""
    return None, (
        "No gallery: data.curated_dir is empty in config.json (the demo generates its "
        "data under data.cache_dir); pass curated_dir= to show it."
    )


def write_report(workdir: str, curated_dir: str | None = None) -> str:
    """Writes `workdir/report.html` and its PNGs in `workdir/report_files/`.

    Args:
      workdir: the run folder (must exist; an empty one gives a page of "missing" notes).
      curated_dir: the curated data to show in the gallery; default: `data.curated_dir` of
        `workdir/config.json`.

    Returns:
      The path of `report.html`.
    """
    if not folder_paths.isdir(workdir):
        raise FileNotFoundError(f"run folder {workdir} does not exist")
    if not folder_paths.is_url(workdir):
        return _render(workdir, workdir, curated_dir)
    with tempfile.TemporaryDirectory(prefix="cclip-report-") as local:
        page_path = _render(workdir, local, curated_dir)
        # The old PNGs go (as Assets empties a local folder), the new ones come before the page
        # that names them: a reader sees the old report or the new one.
        files = folder_paths.join(workdir, FILES_DIR)
        folder_paths.rmtree(files)
        folder_paths.copy_files(os.path.join(local, FILES_DIR), files)
        with open(page_path, "rb") as f:
            folder_paths.write_atomic(run_folder.path(workdir, run_folder.REPORT), f.read())
    return run_folder.path(workdir, run_folder.REPORT)


def _render(workdir: str, out_dir: str, curated_dir: str | None) -> str:
    """Writes the report of the run folder `workdir` into the local folder `out_dir` (its
    `report.html` and `report_files/`); returns the page's path."""
    assets = Assets(out_dir)
    config, why_no_config = load_config(workdir)
    records, why_no_metrics = _load_metrics(workdir)
    gallery_dir, why_no_gallery = _curated_dir(config, curated_dir)
    title = f"cclip_jax run: {folder_paths.basename(folder_paths.absolute(workdir))}"
    body = [
        section("run", "Run", *_header(workdir, config, why_no_config, records)),
        section(
            "curves",
            "Training curves",
            *([note(why_no_metrics)] if why_no_metrics else []),
            *(_curves(records, assets) if records else []),
        ),
        section("evaluation", "Evaluation", *eval_section(workdir, assets)),
        section(
            "gallery",
            "Sample curated batches",
            *gallery_section(gallery_dir, why_no_gallery, assets),
        ),
    ]
    return write_page(out_dir, page(title, *body))
