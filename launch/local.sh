#!/usr/bin/env bash
# Train on this machine (CPU, one GPU, or all GPUs of one host).
#   launch/local.sh [CONFIG] [WORKDIR] [--config.key=value ...]
# Defaults: configs/demo.py and /tmp/cclip_demo. Killing and rerunning the same command resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-configs/demo.py}"
workdir="${2:-/tmp/cclip_demo}"
shift $(( $# > 2 ? 2 : $# ))
exec python -m cclip_jax.main --config="${config}" --workdir="${workdir}" "$@"
