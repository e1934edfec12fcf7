"""`benchmarks/arms_bench.py --quick` runs and prints a table of finite, positive ratios."""

from __future__ import annotations

import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The benchmark script's names (BASE_ARM, QUICK_ARMS), read from its file: benchmarks/ is not
# a package.
arms_bench = SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "arms_bench.py")))


def child_env() -> dict[str, str]:
    """This environment on CPU, without the 8 fake devices conftest.py asks for (in case they
    reached the environment as an XLA flag): the child benchmarks one device."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    if flags.strip():
        env["XLA_FLAGS"] = flags.strip()
    else:
        env.pop("XLA_FLAGS", None)
    return env


def parse_table(text: str) -> list[dict[str, str]]:
    """The first markdown table of `text`, as rows of `{header: cell}`."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("| ---"):
            head = [h.strip() for h in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip("|").split("|")]
                assert len(cells) == len(head), row
                rows.append(dict(zip(head, cells, strict=True)))
            return rows
    raise AssertionError(f"no markdown table in:\n{text}")


def test_child_env_strips_the_fake_device_count():
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_foo=1"
    try:
        env = child_env()
    finally:
        del os.environ["XLA_FLAGS"]
    assert env["XLA_FLAGS"] == "--xla_foo=1" and env["JAX_PLATFORMS"] == "cpu"


@pytest.mark.slow
def test_quick_run_prints_finite_positive_ratios():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "arms_bench.py"), "--quick"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    first = out.splitlines()[0]
    assert first.startswith("# arms_bench") and "jax" in first and "1 device(s)" in first, first
    rows = parse_table(out)
    assert [r["arm"] for r in rows] == [arms_bench.BASE_ARM, *arms_bench.QUICK_ARMS], out
    ratio = f"ratio to {arms_bench.BASE_ARM} (median)"
    for row in rows:
        lo, hi = (float(v) for v in row["ratio IQR"].split("–"))
        values = [
            float(row[ratio]),
            lo,
            hi,
            float(row["step ms (median)"]),
            float(row["compile s"]),
        ]
        assert all(math.isfinite(v) and v > 0 for v in values), row
        assert lo <= float(row[ratio]) <= hi, row
    assert float(rows[0][ratio]) == 1.0  # SigLIP over itself, round by round
