"""benchmarks/gpu_check.sh --tiny: the one-shot GPU check rehearsed on CPU at tiny sizes.

The script runs once on a GPU machine with no second chance, so its whole path (header, both
sections, the markdown file) is run here on CPU. Timings are only checked to be numbers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = re.compile(r"^\d+(\.\d+)?$")


def child_env() -> dict[str, str]:
    """This environment for the script, on CPU with JAX's default single CPU device.

    conftest.py gives the pytest process 8 fake CPU devices through `jax.config` (not inherited);
    any device-count setting in the environment is dropped too, so the child sees 1 device.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "JAX_NUM_CPU_DEVICES")}
    flags = [
        f
        for f in env.pop("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    env.update(JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    return env


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown rows whose first cell starts with `first_cell`."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(first_cell):
            rows.append(cells)
    return rows


@pytest.mark.slow  # about 1.5 minutes on 2 cores: 7 processes, two train-step compiles
def test_tiny_gpu_check_writes_both_sections_with_numbers(tmp_path):
    out = tmp_path / "sub" / "gpu_check.md"
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--tiny", "--out", str(out)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert out.exists() and (tmp_path / "sub" / "gpu_check.log").exists()
    text = out.read_text()
    assert text == proc.stdout  # the file holds what was printed
    header = text.splitlines()[0]
    assert header.startswith("# gpu_check: cpu") and " jax " in header and "UTC" in header
    assert "jax.device_count()=1" in text  # no fake devices leaked into the child
    assert "## A. Losses" in text and "## B. Train steps" in text
    assert "failed" not in text and "stopped at" not in text and "error:" not in text

    # Section A: 3 sizes of each loss at K=32, 1 at K=128, and the reported anchor.
    header_cells = table_rows(text, "loss")[0]
    ms = header_cells.index("fwd+bwd ms (median)")
    sig = table_rows(text, "sigmoid_loss")
    cond = table_rows(text, "conditional")
    assert [r[1] for r in sig] == ["128", "256", "512"]
    assert [(r[1], r[3]) for r in cond] == [
        ("128", "32"),
        ("256", "32"),
        ("512", "32"),
        ("128", "128"),
    ]
    for row in sig + cond:
        assert NUMBER.match(row[ms]) and float(row[ms]) > 0, row
        assert NUMBER.match(row[ms + 3]), row  # temp MiB from memory_analysis
    anchor = table_rows(text, "siglip-kernel")
    assert len(anchor) == 1 and anchor[0][ms] == "48.8" and anchor[0][1] == "65536"

    # Section B: one SigLIP and one CCLIP step row, examples/s and GFLOP/s numeric, MFU n/a.
    cols = table_rows(text, "step")[0]
    steps = table_rows(text, "SigLIP") + table_rows(text, "CCLIP")
    assert len(steps) == 2
    for row in steps:
        assert row[cols.index("batch")] == "16"
        for name in ("step ms (median)", "examples/s", "achieved GFLOP/s"):
            assert NUMBER.match(row[cols.index(name)]) and float(row[cols.index(name)]) > 0
        assert row[cols.index("MFU")] == "n/a"
    assert re.search(r"Total: \d+ s\.", text)
