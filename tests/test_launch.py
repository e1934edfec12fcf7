"""The launch scripts' documented usages, run against stand-in `python`, `gcloud`, `srun` and
`sbatch` executables placed first on PATH: each records its argv (and, for `python`, its
working folder and GPU) so that the exact command lines can be checked. No network, no cluster.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
TRAIN = ["-m", "cclip_jax.main"]

# Each stand-in writes one record: its name, then its arguments, NUL-separated.
RECORD = """#!/usr/bin/env bash
n=$(ls "$LAUNCH_LOG" | wc -l)
printf '%s\\0' "$(basename "$0")" "$@" > "$LAUNCH_LOG/$(printf %03d "$n")"
"""
STUBS = {
    "python": RECORD + 'printf "%s\\n%s\\n" "$PWD" "${CUDA_VISIBLE_DEVICES-unset}" '
    '> "$LAUNCH_LOG/$(printf %03d "$n").env"\n',
    "gcloud": RECORD,
    # srun: drop its own options, run the step's command once (as task 0 of one node).
    "srun": RECORD + 'while [[ "$1" == -* ]]; do shift; done\nSLURM_LOCALID=0 exec "$@"\n',
    # sbatch: drop its options, run the batch script as Slurm would, from the submit folder.
    "sbatch": RECORD + 'while [[ "$1" == -* ]]; do shift; done\n'
    'script="$1"; shift\n'
    'SLURM_SUBMIT_DIR="$PWD" SLURM_JOB_ID=1 exec bash "$script" "$@"\n',
}


@pytest.fixture
def env(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CCLIP_", "SLURM_"))}
    e.update(
        PATH=f"{bin_dir}:{os.environ['PATH']}", LAUNCH_LOG=str(log), HOME=str(tmp_path / "home")
    )
    return e


def launch(env, *args, script="local.sh", cwd=ROOT, check=True):
    cmd = [os.path.join(LAUNCH, script), *args]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def calls(env):
    """`[(name, argv)]` of the stand-ins, in call order; python's also with (cwd, gpu)."""
    log = env["LAUNCH_LOG"]
    out = []
    for name in sorted(n for n in os.listdir(log) if not n.endswith(".env")):
        with open(os.path.join(log, name)) as f:
            who, *argv = f.read().split("\0")[:-1]
        if os.path.exists(os.path.join(log, name + ".env")):
            with open(os.path.join(log, name + ".env")) as f:
                argv.append(tuple(f.read().splitlines()))
        out.append((who, argv))
    return out


@pytest.mark.parametrize(
    ("args", "config", "workdir", "overrides"),
    [
        ((), "configs/demo.py", "/tmp/cclip_demo", []),
        (
            ("--config.total_steps=5",),
            "configs/demo.py",
            "/tmp/cclip_demo",
            ["--config.total_steps=5"],
        ),
        (
            ("configs/siglip_demo.py", "--config.total_steps=5"),
            "configs/siglip_demo.py",
            "/tmp/cclip_demo",
            ["--config.total_steps=5"],
        ),
        (
            ("configs/demo.py:smoke", "/tmp/w x", "--config.total_steps=5", "--config.seed=1"),
            "configs/demo.py:smoke",
            "/tmp/w x",
            ["--config.total_steps=5", "--config.seed=1"],
        ),
    ],
)
def test_local(env, tmp_path, args, config, workdir, overrides):
    launch(env, *args, cwd=tmp_path)  # from anywhere: the script runs from the repository
    assert calls(env) == [
        (
            "python",
            [*TRAIN, f"--config={config}", f"--workdir={workdir}", *overrides, (ROOT, "unset")],
        )
    ]


def test_local_venv(env, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text(STUBS["python"].replace('"$(basename "$0")"', "venv-python"))
    (venv / "bin/python").chmod(0o755)
    launch(env | {"CCLIP_VENV": str(venv)}, "--config.seed=2")
    assert calls(env) == [
        (
            "venv-python",
            [
                *TRAIN,
                "--config=configs/demo.py",
                "--workdir=/tmp/cclip_demo",
                "--config.seed=2",
                (ROOT, "unset"),
            ],
        )
    ]
    res = launch(env | {"CCLIP_VENV": str(tmp_path / "nope")}, check=False)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert f"CCLIP_VENV={tmp_path}/nope" in res.stderr and "no bin/python" in res.stderr


def tpu_command(argv):
    """The gcloud call's `--command` and the rest of its argv."""
    (command,) = [a for a in argv if a.startswith("--command=")]
    return command[len("--command=") :], [a for a in argv if not a.startswith("--command=")]


def run_remote(env, command):
    """Runs the pod command as a host would (HOME holding the checkout), recording python."""
    os.makedirs(os.path.join(env["HOME"], "cclip_jax"), exist_ok=True)
    subprocess.run(["bash", "-c", command], env=env, check=True, timeout=30, capture_output=True)
    return calls(env)[-1]


def test_tpu_pod(env):
    launch(
        env,
        "my-tpu",
        "us-central2-b",
        "configs/cclip_b16.py:tpu",
        "gs://b/runs/b16",
        "--config.data.curated_dir=/mnt/curated",
        "--project=my-project",
        "--config.seed=3",
        script="tpu_pod.sh",
    )
    ((who, argv),) = calls(env)
    command, rest = tpu_command(argv)
    assert who == "gcloud" and rest == [
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        "my-tpu",
        "--zone=us-central2-b",
        "--project=my-project",
        "--worker=all",
    ]
    assert command == (
        "set -o pipefail; cd ~/cclip_jax && python -m cclip_jax.main "
        "--config=configs/cclip_b16.py:tpu --workdir=gs://b/runs/b16 --config.distributed=True "
        "--config.data.curated_dir=/mnt/curated --config.seed=3 "
        "2>&1 | tee -a /tmp/cclip_train.log"
    )
    # What a host runs: the trainer gets no --project, and the arguments arrive intact.
    who, argv = run_remote(
        env, command.replace("/tmp/cclip_train.log", os.path.join(env["HOME"], "train.log"))
    )
    assert (who, argv[:-1]) == (
        "python",
        [
            *TRAIN,
            "--config=configs/cclip_b16.py:tpu",
            "--workdir=gs://b/runs/b16",
            "--config.distributed=True",
            "--config.data.curated_dir=/mnt/curated",
            "--config.seed=3",
        ],
    )
    assert argv[-1][0] == os.path.join(env["HOME"], "cclip_jax")


def test_tpu_pod_quoting_venv_and_errors(env, tmp_path):
    launch(
        env | {"CCLIP_VENV": "/opt/cclip venv", "CCLIP_REMOTE_DIR": "/srv/cclip"},
        "t",
        "z",
        "configs/siglip_b16.py:tpu,baseline",
        "gs://b/r",
        "--config.data.curated_dir=/a b",
        script="tpu_pod.sh",
    )
    command, rest = tpu_command(calls(env)[0][1])
    assert "--project" not in " ".join(rest)
    assert command.startswith(
        "set -o pipefail; cd /srv/cclip && source /opt/cclip\\ venv/bin/activate && python "
    )
    words = shlex.split(command.split(" && ")[-1].split(" 2>&1")[0])
    assert words == [
        "python",
        *TRAIN,
        "--config=configs/siglip_b16.py:tpu,baseline",
        "--workdir=gs://b/r",
        "--config.distributed=True",
        "--config.data.curated_dir=/a b",
    ]
    for bad in (
        ["t", "z", "c.py"],
        ["t", "z", "--config.seed=1", "gs://b/r"],
        ["t", "z", "c.py", "gs://b/r", "--project"],
    ):
        res = launch(env, *bad, script="tpu_pod.sh", check=False)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert len(calls(env)) == 1  # no failed usage reached gcloud


def test_gpu_slurm(env, tmp_path):
    submit = tmp_path / "submit"
    submit.mkdir()
    script = os.path.join(LAUNCH, "gpu_slurm.sh")
    args = [
        "--nodes=4",
        "--gpus-per-node=8",
        "--ntasks-per-node=8",
        script,
        "configs/cclip_b16.py:gpu",
        "/shared/runs/cclip_b16",
        "--config.data.curated_dir=/shared/curated",
        "--config.seed=4",
    ]
    subprocess.run(["sbatch", *args], cwd=submit, env=env, check=True, timeout=30)
    (sbatch, srun, python) = calls(env)
    assert sbatch == ("sbatch", args)
    assert srun[0] == "srun" and srun[1][:3] == ["--kill-on-bad-exit=1", "bash", "-c"]
    assert srun[1][4:] == [
        "_",
        "--config=configs/cclip_b16.py:gpu",
        "--workdir=/shared/runs/cclip_b16",
        "--config.distributed=True",
        "--config.data.curated_dir=/shared/curated",
        "--config.seed=4",
    ]
    assert python == ("python", [*TRAIN, *srun[1][5:], (str(submit), "0")])
    res = subprocess.run(
        ["sbatch", script, "--config.seed=1", "/w"],
        cwd=submit,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2 and "given where CONFIG or WORKDIR" in res.stderr
    assert len(calls(env)) == 4  # only the second sbatch itself
