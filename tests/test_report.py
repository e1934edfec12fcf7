"""The run report: written from a fake run folder and rendered by headless Chromium (the
experiment report is tested in test_report_experiment.py).

The rendered DOM must hold every section, the table values, the gallery captions (escaped), and
`data-images-ok="N/N"`: the page's own script counts the `<img>` that really decoded after load.
"""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image
from report_render import check_screenshot, needs_chromium, render

from cclip_jax import report
from cclip_jax.curation import shards
from cclip_jax.report import assets, browser, evaluation, html, plots

HOSTILE = 'a red <b>square</b> & "circle" <script>alert(1)</script>'


def png_bytes(colour, size=16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def eval_json(step: int, image_root: str, acc: float) -> dict:
    """An evaluation file of the documented schema (what `cclip_jax.evaluation` writes)."""
    rows = [
        {
            "query": f"images/q{i}.png",
            "concept": "red" if i == 0 else "left of",
            "type": "colour" if i == 0 else "relation",
            "results": [
                {"image": f"images/r{j}.png", "relevant": j % 2 == 0, "score": 0.9 - 0.1 * j}
                for j in range(3)
            ],
        }
        for i in range(2)
    ]
    rows[1]["results"].append({"image": "images/gone.png", "relevant": False, "score": 0.1})
    return {
        "step": step,
        "image_root": image_root,
        "results": {
            "binding/iid/attribute_swap": {
                "metrics": {"accuracy": acc},
                "n": 100,
                "skipped": 0,
                "chance": {"accuracy": 0.5},
            },
            "binding/iid/group_attribute": {
                "metrics": {"text": 0.3, "image": 0.2, "group": 0.1},
                "n": 50,
                "chance": {"text": 0.25, "group": 1 / 6},
            },
            "blind/iid/attribute_swap": {"metrics": {"accuracy": 0.5}, "n": 100},
            "retrieval/synthetic_iid": {
                "metrics": {"i2t_r1": 0.11, "i2t_r5": 0.4, "t2i_r1": 0.12},
                "n": 200,
            },
            "cond_retrieval/iid": {
                "metrics": {"p1": 0.5, "p5": 0.42},
                "n": 2,
                "rows": rows,
                "truncated": 1,
                "truncated_examples": ["a long concept"],
            },
            "sugarcrepe/replace_att": {"error": "missing file replace_att.json", "seconds": 0.1},
            "zeroshot/shapes": {
                "metrics": {"top1": 0.77, "top5": 0.99},
                "n": 40,
                "skipped": 3,
                "skipped_examples": ["a.png", "b.png"],
            },
        },
    }


def write_curated(out: str) -> None:
    """Two curated batches of 4 rows written with the project's own shard writer."""
    concepts = ["red", "square", "left of"]
    writer = shards.ShardWriter(out, batches_per_shard=1, width=4, options="group_size:1")
    for b in range(2):
        labels = np.array([[1, 1, 0, 0], [1, -1, 1, 0], [-1, 1, 0, 0], [1, 0, -1, 0]], np.int8)
        caps = [HOSTILE if (b, r) == (0, 0) else f"batch {b} caption {r}" for r in range(4)]
        writer.write(
            [f"k{b}{r}" for r in range(4)],
            caps,
            [png_bytes((60 * r, 40 * b, 200)) for r in range(4)],
            concepts,
            labels,
        )
    shards.write_manifest(
        out,
        {
            "format": shards.FORMAT,
            "batch_size": 4,
            "max_concepts": 4,
            "max_present": 2,
            "num_batches": 2,
            "tokenizer": shards.TOKENIZER,
            "shards": writer.close(),
        },
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run, images = root / "run", root / "world"
    (run / "eval").mkdir(parents=True)
    (images / "images").mkdir(parents=True)
    for name, colour in [("q0", (255, 0, 0)), ("q1", (0, 0, 255))] + [
        (f"r{j}", (0, 80 * j, 0)) for j in range(3)
    ]:
        (images / "images" / f"{name}.png").write_bytes(png_bytes(colour))
    write_curated(str(root / "curated"))
    config = {
        "loss": "sigmoid",
        "cond_weight": 1.0,
        "batch_size": 64,
        "total_steps": 600,
        "model": {"embed_dim": 32, "image": {"variant": "mu/8"}},
        "data": {"mode": "curated", "curated_dir": str(root / "curated")},
    }
    (run / "config.json").write_text(json.dumps(config))
    with open(run / "metrics.jsonl", "w") as f:
        for step in range(10, 60, 10):
            rec = {
                "step": step,
                "loss": 200.0 / step,
                "loss_sig": 7 - step / 50,
                "loss_cond": 190.0 / step,
                "lr": 1e-3 * step / 50,
                "scale": 10.0,
                "bias": -10.0,
                "cond_scale": 10.1,
                "cond_bias": -9.9,
                "gate_entropy": 0.98,
                "logit_pos": -5 + step / 20,
                "logit_neg": -9.0,
                "grad_norm": 1.5,
                "param_norm": 30.0,
                "examples_per_s": 1900.0,
                "steps_per_s": 20.0,
                "triples_pos": 300.0,
                "odd_metric": 1.0,
            }
            f.write(json.dumps(rec) + "\n")
    for step, acc in [(20, 0.55), (50, 0.63)]:
        with open(run / "eval" / f"step_{step:08d}.json", "w") as f:
            json.dump(eval_json(step, str(images), acc), f)
    return str(run)


@needs_chromium
def test_run_report_renders_everything(run_dir, tmp_path):
    path = report.write_report(run_dir)
    assert path == os.path.join(run_dir, "report.html")
    dom, n = render(path)
    for anchor in ("run", "curves", "evaluation", "gallery"):
        assert f'<section id="{anchor}">' in dom
    files = os.listdir(os.path.join(run_dir, "report_files"))
    assert all(f"report_files/{f}" in dom for f in files) and n >= len(files) >= 9 + 5 + 8 + 5
    # Config summary, latest evaluation (step 50, not 20), chance, flagged skips.
    assert "mu/8" in dom and "Latest evaluation: step 50" in dom
    assert ">0.630<" in dom and ">0.550<" not in dom and "accuracy 0.500" in dom
    assert re.search(
        r'<td class="warn" title="skipped: a\.png\nskipped: b\.png">'
        r"skipped 3 \(e\.g\. a\.png\)</td>",
        dom,
    )
    assert "error: missing file replace_att.json" in dom
    assert "truncated 1 (e.g. a long concept)" in dom and "<small>relation</small>" in dom
    assert "binding: " not in dom  # 5 lines: one plot for the family, not one per metric
    # Conditional retrieval: query framed blue, relevant green, not relevant red, missing shown.
    assert dom.count('class="px query"') == 2 and 'class="px hit"' in dom
    assert 'class="px miss"' in dom and "image missing" in dom
    # Gallery: captions escaped (no injected element), concepts as chips, −1 marked.
    assert "a red &lt;b&gt;square&lt;/b&gt; &amp;" in dom and "<b>square" not in dom
    assert "alert(1)" in dom and "<script>alert" not in dom
    assert "batch 1 caption 3" in dom and '<span class="chip pos">left of</span>' in dom
    assert '<span class="chip neg">square</span>' in dom
    assert "Also logged, not plotted: odd_metric." in dom
    check_screenshot(path, str(tmp_path / "run.png"))


def test_empty_workdir_says_what_is_missing(tmp_path):
    path = report.write_report(str(tmp_path))
    page = open(path).read()
    for missing in ("No config.json", "No training metrics yet", "No evaluation yet", "No gallery"):
        assert missing in page
    assert "<img" not in page
    if browser.find_chromium():
        assert 'data-images-ok="0/0"' in browser.dump_dom(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.write_report(str(tmp_path / "nope"))


def test_partial_and_bad_inputs_degrade_to_notes(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "step_00000001.json").write_text("{not json")
    (tmp_path / "eval" / "step_00000002.json").write_text(
        json.dumps(
            {"step": 2, "results": {"binding/iid/x": 3, "retrieval/a": {"metrics": {"r1": 0.5}}}}
        )
    )
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    (tmp_path / "config.json").write_text(json.dumps({"data.curated_dir": "", "loss": "softmax"}))
    page = open(report.write_report(str(tmp_path), curated_dir=str(tmp_path / "nothing"))).read()
    assert "step_00000001.json" in page and "malformed entry" in page
    assert "1 unreadable lines skipped" in page and "softmax" in page
    assert "cannot read the curated folder" in page
    page = open(report.write_report(str(tmp_path))).read()
    assert "data.curated_dir is empty" in page


def test_many_series_become_few_readable_plots(tmp_path):
    files = assets.Assets(str(tmp_path))
    # 2 metrics x 10 `split/kind` keys: one plot per metric, lines = the 2 splits' means.
    evals = [
        {
            "step": s,
            "results": {
                f"binding/s{i % 2}/k{i}": {"metrics": {"a": 0.1, "b": i}} for i in range(10)
            },
        }
        for s in (1, 2)
    ]
    figs, left = evaluation._family_plots(evals, "binding", files)
    assert [f.count("by split") for f in figs] == [1, 1] and left == 0
    series = evaluation._mean_by_split([(f"s{i % 2}/k{i}", [1, 2], [0.1, i]) for i in range(10)])
    assert series == [
        ("s0 (mean of 5)", [1, 2], [0.1, 4.0]),
        ("s1 (mean of 5)", [1, 2], [0.1, 5.0]),
    ]
    # 9 metric names (overall + 2 per-type breakdowns) x 3 keys: the 4 shortest names are
    # plotted, 5 left to the table, which turns metrics into rows (too many for columns).
    names = [f"{t}p{k}" for t in ("", "colour_", "shape_") for k in (1, 5, 10)]
    evals = [
        {
            "step": s,
            "results": {
                f"cr/{key}": {"metrics": dict.fromkeys(names, 0.5), "n": 3} for key in "abc"
            },
        }
        for s in (1, 2)
    ]
    figs, left = evaluation._family_plots(evals, "cr", files)
    assert [f.split('alt="')[1].split('"')[0] for f in figs] == [
        "cr: p1",
        "cr: p5",
        "cr: p10",
        "cr: shape_p1",
    ] and left == 5
    table = evaluation._family_table(list(evals[1]["results"].items()))
    assert table.count("<table") == 2 and table.count("<tr>") == 1 + 9 + 1 + 3


def test_escaping_and_number_format():
    assert html.esc('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert html.esc(html.Markup("<b>")) == "<b>"
    assert [html.fmt(x) for x in (0.5, 12345.0, 1e-5, 3, None, float("nan"))] == [
        "0.500",
        "1.23e+04",
        "1e-05",
        "3",
        "—",
        "nan",
    ]
    assert plots.wants_log([1.0, 200.0]) and not plots.wants_log([-1.0, 200.0])


def test_loss_terms_get_their_own_axes(tmp_path, monkeypatch):
    """loss_cond (30-190) and loss_sig (~5) on one linear axis flatten loss_sig: each loss term
    is drawn on its own axes, with a y range that fits it."""
    from matplotlib.figure import Figure

    from cclip_jax.report import run

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    records = [
        {"step": s, "loss_sig": 5.0 + 0.1 * (s % 3), "loss_cond": 190.0 - 16 * s, "lr": 1e-3}
        for s in range(1, 11)
    ]
    for r in records:
        r["loss"] = r["loss_sig"] + 0.1 * r["loss_cond"]
    run._curves(records, assets.Assets(str(tmp_path)))
    (fig,) = [f for f in saved if f.get_suptitle() == "Loss terms"]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    labels = [[line.get_label() for line in ax.get_lines()] for ax in axes]
    assert labels == [["loss"], ["loss_sig"], ["loss_cond"]]
    low, high = axes[1].get_ylim()
    assert 4.5 < low and high < 5.5  # loss_sig's variation fills its axes
    assert axes[2].get_ylim()[1] > 150
    # The other groups keep one axes (the learning rate).
    assert any(len(f.axes) == 1 and f.axes[0].get_title() == "Learning rate" for f in saved)
