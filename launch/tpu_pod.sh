#!/usr/bin/env bash
# TPU pod training: the same command on every host of a TPU VM slice.
#   launch/tpu_pod.sh TPU_NAME ZONE configs/cclip_b16_tpu.py gs://bucket/runs/cclip_b16 \
#       --config.data.curated_dir=/mnt/curated [--project=P]
# Assumes the repository is checked out at ~/cclip_jax on every host with the environment set
# up (see README) and the curated shards on a disk or filesystem every host can read. The
# workdir should be a gs:// path (orbax writes there) so checkpoints survive the VMs.
# jax.distributed.initialize() needs no arguments on TPU VMs. Re-running resumes.
set -euo pipefail
tpu="${1:?TPU name}"
zone="${2:?zone}"
config="${3:?config file}"
workdir="${4:?workdir}"
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${tpu}" --zone="${zone}" --worker=all --command="
  cd ~/cclip_jax && source .venv/bin/activate &&
  python -m cclip_jax.main --config=${config} --workdir=${workdir} --config.distributed=True${extra}
  2>&1 | tee -a /tmp/cclip_train.log"
