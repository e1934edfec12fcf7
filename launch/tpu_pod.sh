#!/usr/bin/env bash
# TPU pod training: the same command on every host of a TPU VM slice.
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--project=P] [--config.key=value ...]
# e.g.
#   launch/tpu_pod.sh my-v4-64 us-central2-b configs/cclip_b16.py:tpu gs://bucket/runs/b16 \
#       --project=my-project --config.data.curated_dir=/mnt/curated
# --project=P (anywhere after the four positionals) is this script's own option: it goes to
# `gcloud compute tpus tpu-vm ssh`, not to the trainer. Every other argument goes to
# `python -m cclip_jax.main` on each host, quoted as given.
# On every host: the repository at ~/cclip_jax (or $CCLIP_REMOTE_DIR, an absolute path), set
# up as in the README (`pip install -r requirements.txt`); the trainer runs with the `python`
# on the hosts' PATH, or with the virtual environment $CCLIP_VENV (its path on the hosts)
# activated when CCLIP_VENV is set. The curated shards must be on a disk or filesystem every
# host can read. The workdir should be a gs:// path so the run folder survives the VMs; the
# hosts then also need `pip install gcsfs` (docs/training.md, "Cloud workdirs"), or the trainer
# stops at start with one line saying so. jax.distributed.initialize() needs no arguments on
# TPU VMs. Re-running resumes.
# Each host appends its output to /tmp/cclip_train.log; the exit status is the trainer's.
set -euo pipefail
usage="usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--project=P] [--config.key=value ...]"
if [[ $# -lt 4 ]]; then echo "${usage}" >&2; exit 2; fi
for arg in "$1" "$2" "$3" "$4"; do
  [[ "${arg}" != -* ]] || { echo "launch/tpu_pod.sh: ${arg} given where TPU_NAME, ZONE, CONFIG" \
    "or WORKDIR belongs; ${usage#usage: }" >&2; exit 2; }
done
tpu="$1" zone="$2" config="$3" workdir="$4"
shift 4
gcloud_opts=()
train_args=()
for arg in "$@"; do
  case "${arg}" in
    --project=?*) gcloud_opts+=("${arg}") ;;
    --project|--project=)
      echo "launch/tpu_pod.sh: --project needs a value: --project=P" >&2; exit 2 ;;
    *) train_args+=("${arg}") ;;
  esac
done
remote_dir="~/cclip_jax"  # unquoted in the command, so that ~ expands on the host
if [[ -n "${CCLIP_REMOTE_DIR:-}" ]]; then remote_dir=$(printf '%q' "${CCLIP_REMOTE_DIR}"); fi
activate=""
if [[ -n "${CCLIP_VENV:-}" ]]; then
  activate="source $(printf '%q' "${CCLIP_VENV}/bin/activate") && "
fi
train=$(printf '%q ' python -m cclip_jax.main "--config=${config}" "--workdir=${workdir}" \
  --config.distributed=True ${train_args[@]+"${train_args[@]}"})
# pipefail: without it the status through ssh would be tee's, and a failed run would look fine.
exec gcloud compute tpus tpu-vm ssh "${tpu}" --zone="${zone}" ${gcloud_opts[@]+"${gcloud_opts[@]}"} \
  --worker=all \
  --command="set -o pipefail; cd ${remote_dir} && ${activate}${train}2>&1 | tee -a /tmp/cclip_train.log"
