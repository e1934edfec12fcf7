#!/usr/bin/env bash
# Multi-host GPU training under Slurm: one process per GPU, jax.distributed over Slurm's env.
#   sbatch [SBATCH OPTIONS] launch/gpu_slurm.sh CONFIG WORKDIR [--config.key=value ...]
# e.g.
#   sbatch --nodes=4 --gpus-per-node=8 --ntasks-per-node=8 launch/gpu_slurm.sh \
#       configs/cclip_b16.py:gpu /shared/runs/cclip_b16 --config.data.curated_dir=/shared/curated
# Slurm's own options go before the script (sbatch reads them); everything after WORKDIR goes
# to `python -m cclip_jax.main` unchanged. Every task runs the same command, from the folder
# sbatch was called in (relative CONFIG and WORKDIR paths are read from there);
# jax.distributed.initialize() (config.distributed=True) reads the coordinator, process count
# and index from the Slurm environment. WORKDIR and the curated folder must be on a filesystem
# all hosts see. Python: the `python` on PATH when sbatch was called (sbatch exports the
# environment, so the one the README's `pip install -r requirements.txt` went into), or
# $CCLIP_VENV/bin/python when CCLIP_VENV names a virtual environment on a shared filesystem.
# Requeue-safe: a restarted job resumes from the last complete checkpoint (Slurm sends
# SIGTERM first; the job saves before exiting).
#SBATCH --job-name=cclip
#SBATCH --signal=TERM@120
#SBATCH --requeue
set -euo pipefail
usage="usage: sbatch [SBATCH OPTIONS] launch/gpu_slurm.sh CONFIG WORKDIR [--config.key=value ...]"
if [[ $# -lt 2 ]]; then echo "${usage}" >&2; exit 2; fi
for arg in "$1" "$2"; do
  # A flag here means CONFIG or WORKDIR was left out: it would be read as a path.
  [[ "${arg}" != -* ]] || { echo "launch/gpu_slurm.sh: ${arg} given where CONFIG or WORKDIR" \
    "belongs; ${usage#usage: }" >&2; exit 2; }
done
config="$1"
workdir="$2"
shift 2
# sbatch runs a copy of this script from its spool folder, so $0 does not locate the repository.
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [[ -n "${CCLIP_VENV:-}" ]]; then
  [[ -x "${CCLIP_VENV}/bin/python" ]] || {
    echo "launch/gpu_slurm.sh: CCLIP_VENV=${CCLIP_VENV} is not a virtual environment (no bin/python)" >&2
    exit 2
  }
  PATH="${CCLIP_VENV}/bin:${PATH}"
  export PATH
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
# One GPU per task: each process sees only its own device.
srun --kill-on-bad-exit=1 bash -c 'export CUDA_VISIBLE_DEVICES=${SLURM_LOCALID}; exec python -m cclip_jax.main "$@"' \
    _ --config="${config}" --workdir="${workdir}" --config.distributed=True "$@"
