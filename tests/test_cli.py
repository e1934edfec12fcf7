"""The command lines' errors: a fixable one is one line on stderr and exit 2, no traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from cclip_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "--config.modle=1",
            'error: --config.modle: no such config field; Did you mean "model" instead of "modle"?',
        ),
        (
            "--config.model.gate=sigmod",
            "error: config.model.gate='sigmod' is not one of ('identity', 'softplus', 'sigmoid', "
            "'ones')",
        ),
        ("--config.batch_size=-4", "error: config.batch_size=-4 must be an int >= 1"),
    ],
)
def test_main_prints_one_line_and_exits_2(tmp_path, override, line):
    cmd = [
        sys.executable,
        "-m",
        "cclip_jax.main",
        "--config=configs/demo.py:smoke",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.cache_dir={tmp_path / 'cache'}",
        override,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop(cli.VERBOSE_ENV, None)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == line
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started
    # --verbose shows the traceback instead.
    again = subprocess.run(
        [*cmd, "--verbose"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert again.returncode != 0 and "Traceback" in again.stderr


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        (
            "configs/nope.py",
            f"error: --config=configs/nope.py: no such config file ({ROOT}/configs/nope.py)",
        ),
        (
            "configs/demo.py:smok",
            "error: flag --config=configs/demo.py:smok: Error whilst parsing "
            "config file: ValueError: unknown variant 'smok'; known: smoke",
        ),
    ],
)
def test_a_bad_config_file_or_variant_is_one_line(tmp_path, spec, line):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop(cli.VERBOSE_ENV, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cclip_jax.main",
            f"--config={spec}",
            f"--workdir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "run").exists()


def test_a_multi_host_config_without_a_cluster_says_how_to_run_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_"))}
    env.pop(cli.VERBOSE_ENV, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cclip_jax.main",
            "--config=configs/demo.py:smoke",
            f"--workdir={tmp_path / 'run'}",
            "--config.distributed=True",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "error: config.distributed=True but jax.distributed.initialize() found no cluster"
    )
    assert line.endswith("to try it on one host pass --config.distributed=False")
    assert not (tmp_path / "run").exists()


def test_run_turns_user_errors_and_a_full_disk_into_one_line(capsys, monkeypatch):
    monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoints/2")

    with pytest.raises(SystemExit) as stop:
        cli.run(full_disk)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: disk full writing /runs/a/checkpoints/2: No space left")
    assert len(err.strip().splitlines()) == 1

    def missing():
        raise FileNotFoundError("config.init_from='/x.npz' does not exist")

    with pytest.raises(SystemExit):
        cli.run(missing)
    assert capsys.readouterr().err == "error: config.init_from='/x.npz' does not exist\n"

    def bug():
        raise OSError(errno.EACCES, "Permission denied")  # not a user error: a traceback

    with pytest.raises(OSError):
        cli.run(bug)
    monkeypatch.setenv(cli.VERBOSE_ENV, "1")
    with pytest.raises(FileNotFoundError):
        cli.run(missing)
