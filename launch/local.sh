#!/usr/bin/env bash
# Train on this machine (CPU, one GPU, or all GPUs of one host).
#   launch/local.sh [CONFIG [WORKDIR]] [--config.key=value ...]
# CONFIG defaults to configs/demo.py and WORKDIR to /tmp/cclip_demo; the first argument that
# starts with "-" ends them, so `launch/local.sh --config.total_steps=5` runs the demo config
# with that override. Everything from there on goes to `python -m cclip_jax.main` unchanged.
# Python: the `python` on PATH (the environment the README's `pip install -r requirements.txt`
# went into), or $CCLIP_VENV/bin/python when CCLIP_VENV names a virtual environment.
# Killing and rerunning the same command resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${CCLIP_VENV:-}" ]]; then
  [[ -x "${CCLIP_VENV}/bin/python" ]] || {
    echo "launch/local.sh: CCLIP_VENV=${CCLIP_VENV} is not a virtual environment (no bin/python)" >&2
    exit 2
  }
  PATH="${CCLIP_VENV}/bin:${PATH}"
fi
config="configs/demo.py"
workdir="/tmp/cclip_demo"
# Positionals only while the arguments do not look like flags: overrides are never eaten.
if [[ $# -gt 0 && "$1" != -* ]]; then config="$1"; shift; fi
if [[ $# -gt 0 && "$1" != -* ]]; then workdir="$1"; shift; fi
exec python -m cclip_jax.main --config="${config}" --workdir="${workdir}" "$@"
