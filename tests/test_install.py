"""The package works from a non-editable install, outside the checkout.

A wheel of the checkout is installed into a fresh folder, and the demo (`:smoke`) runs from
another directory with that folder first on the path and the config file given by its path:
nothing may rely on the checkout's layout (relative paths, `sys.path` edits, files outside
the package).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_runs_from_a_wheel_outside_the_checkout(tmp_path):
    wheels, site, cwd = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT],
        check=True,
        cwd=cwd,
    )
    (wheel,) = wheels.glob("cclip_jax-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, cwd=cwd)

    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "JAX_PLATFORMS": "cpu",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HOME": str(tmp_path / "home"),
    }
    where = subprocess.run(
        [sys.executable, "-c", "import cclip_jax; print(cclip_jax.__file__)"],
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    assert pathlib.Path(where.stdout.strip()).is_relative_to(site), where.stdout

    workdir = tmp_path / "run"
    config = ROOT / "configs" / "demo.py"
    cache = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cclip_jax.main",
            f"--config={config}:smoke",
            f"--workdir={workdir}",
            f"--config.data.cache_dir={cache}",
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((workdir / "config.json").read_text())["total_steps"] == 2
    assert list((workdir / "eval").glob("step_*.json")), "no final evaluation"
