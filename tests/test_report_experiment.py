"""The experiment report (arms x presets x seeds, a batch-size sweep, the runs) rendered by
headless Chromium, and the report CLI: it recognises an experiment folder, and a screenshot
without Chromium fails with the install hint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from report_render import check_screenshot, needs_chromium, render

from cclip_jax import report
from cclip_jax.report import browser


def experiment_results(workdir: str) -> dict:
    arms, presets = ["siglip", "cclip", "cclip_gate_ones"], ["clean", "natural"]
    keys = [
        "iid/attribute_swap/accuracy",
        "compositional/attribute_swap/accuracy",
        "compositional/group_relation/group",
    ]

    def stat(mean):
        return {"mean": mean, "std": 0.05, "values": [mean - 0.05, mean, mean + 0.05], "n_seeds": 3}

    os.makedirs(os.path.join(workdir, "runs", "cclip_clean_0"))
    with open(os.path.join(workdir, "runs", "cclip_clean_0", "report.html"), "w") as f:
        f.write("<!doctype html><title>run</title>")
    return {
        "title": "Binding experiment <quick>",
        "config": {"steps": 100, "model": {"size": "mu"}},
        "arms": arms,
        "presets": presets,
        "seeds": [0, 1, 2],
        "batch_sizes": [32, 64, 128],
        "table": {
            a: {p: {k: stat(0.5 + 0.1 * i + 0.01 * j) for j, k in enumerate(keys)} for p in presets}
            for i, a in enumerate(arms)
        },
        "sweep": {
            a: {str(b): {k: stat(0.5 + b / 1000 + 0.1 * i) for k in keys} for b in (32, 64, 128)}
            for i, a in enumerate(arms[:2])
        },
        "summary": ["cclip beats siglip on compositional/attribute_swap by 0.1 (> 2 std)."],
        "runs": [
            {
                "arm": "cclip",
                "preset": "clean",
                "seed": 0,
                "batch_size": 64,
                "wall_s": 61.5,
                "workdir": "runs/cclip_clean_0",
                "final": {"loss": 1.0},
            },
            {
                "arm": "siglip",
                "preset": "clean",
                "seed": 0,
                "batch_size": 64,
                "wall_s": 55.0,
                "workdir": "/elsewhere/missing",
                "final": {},
            },
        ],
        "wall_s": 1234.0,
    }


@needs_chromium
def test_experiment_report_renders(tmp_path):
    results = experiment_results(str(tmp_path))
    path = report.write_experiment_report(str(tmp_path), results)
    dom, n = render(path)
    assert n == 3  # one bar chart per preset, one sweep plot
    for anchor in ("summary", "preset-clean", "preset-natural", "sweep", "runs", "config"):
        assert f'<section id="{anchor}">' in dom
    assert "Binding experiment &lt;quick&gt;" in dom
    assert "cclip beats siglip" in dom
    # Best mean per row in bold: cclip_gate_ones (0.700) on the first key.
    assert re.search(r'<td class="num best" title="[^"]*">0\.700 ± 0\.050</td>', dom)
    assert re.search(r'<td class="num" title="[^"]*">0\.500 ± 0\.050</td>', dom)
    assert '<a href="runs/cclip_clean_0/report.html">report</a>' in dom
    assert dom.count(">report</a>") == 1  # the run without a report gets no link
    check_screenshot(path, str(tmp_path / "exp.png"))


def test_cli_guesses_experiment_and_fails_cleanly_without_chromium(tmp_path, monkeypatch):
    with open(tmp_path / "results.json", "w") as f:
        json.dump(experiment_results(str(tmp_path)), f)
    proc = subprocess.run(
        [sys.executable, "-m", "cclip_jax.report", f"--workdir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(tmp_path / "report.html")
    assert 'id="sweep"' in (tmp_path / "report.html").read_text()
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    with pytest.raises(report.ChromiumNotFoundError, match="apt-get install chromium"):
        report.screenshot(str(tmp_path / "report.html"), str(tmp_path / "x.png"))
