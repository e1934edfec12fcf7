"""`benchmarks/grad_ratio_bench.py --quick` runs and prints parseable, finite, positive ratios."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def parse_tables(text: str) -> list[list[dict[str, str]]]:
    """Markdown tables of `text`, each as rows of `{header: cell}`."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            head = [h.strip() for h in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                assert len(cells) == len(head), lines[i]
                rows.append(dict(zip(head, cells, strict=True)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


@pytest.mark.slow  # a subprocess that compiles ~20 functions (1-2.5 minutes on 2 cores)
def test_quick_run_prints_finite_positive_ratios():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "grad_ratio_bench.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert out.startswith("# grad_ratio_bench") and "jax" in out.splitlines()[0]
    tables = parse_tables(out)
    assert len(tables) == 3, out
    emb, par, norms = tables
    # Quick: B ∈ {64, 512} × K ∈ {16, 64}; the embeddings table has a tower and a gauss row each.
    cells = {(b, k) for b in ("64", "512") for k in ("16", "64")}
    assert {(r["B"], r["K"]) for r in par} == cells == {(r["B"], r["K"]) for r in norms}
    assert len(emb) == 8 and {r["emb"] for r in emb} == {"tower", "gauss"}
    for rows in (emb, par):
        for row in rows:
            assert 0 < float(row["p"]) < 1, row
            ratios = {h: c for h, c in row.items() if h.startswith("ratio")}
            assert len(ratios) == 4, row
            for head, value in ratios.items():
                for v in parse_cell(value):
                    assert math.isfinite(v) and v > 0, (head, row)
    for row in norms:
        for head, value in row.items():
            if head not in ("B", "K"):
                assert all(math.isfinite(v) and v > 0 for v in parse_cell(value)), (head, row)


def parse_cell(value: str) -> tuple[float, float, float]:
    """`"mean (min–max)"` -> `(mean, min, max)`."""
    mean, rest = value.split(" (")
    lo, hi = rest.rstrip(")").split("–")
    return float(mean), float(lo), float(hi)
