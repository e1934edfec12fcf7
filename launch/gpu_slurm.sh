#!/usr/bin/env bash
# Multi-host GPU training under Slurm: one process per GPU, jax.distributed over Slurm's env.
#   sbatch --nodes=4 --gpus-per-node=8 --ntasks-per-node=8 launch/gpu_slurm.sh \
#       configs/cclip_b16_gpu.py /shared/runs/cclip_b16 --config.data.curated_dir=/shared/curated
# Every task runs the same command; jax.distributed.initialize() (config.distributed=True)
# reads the coordinator, process count and index from the Slurm environment. WORKDIR and the
# curated folder must be on a filesystem all hosts see. Requeue-safe: a restarted job resumes
# from the last complete checkpoint (Slurm sends SIGTERM first; the job saves before exiting).
#SBATCH --job-name=cclip
#SBATCH --signal=TERM@120
#SBATCH --requeue
set -euo pipefail
config="${1:?config file}"
workdir="${2:?workdir}"
shift 2
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
# One GPU per task: each process sees only its own device.
srun --kill-on-bad-exit=1 bash -c 'export CUDA_VISIBLE_DEVICES=${SLURM_LOCALID}; exec python -m cclip_jax.main "$@"' \
    _ --config="${config}" --workdir="${workdir}" --config.distributed=True "$@"
