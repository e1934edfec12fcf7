#!/usr/bin/env bash
# One-shot GPU check: loss timings and B/16 train-step throughput on ONE NVIDIA GPU, as markdown.
#
#   bash benchmarks/gpu_check.sh                  # GPU, full sizes: at most 8 minutes in all
#   bash benchmarks/gpu_check.sh --tiny           # CPU, tiny sizes: rehearsal (~1-2 min, 2 cores)
#   bash benchmarks/gpu_check.sh --tiny --out /tmp/gpu_check.md
#
# Run from anywhere (it cd's to the repository root) with the project's Python on PATH (or
# PYTHON=/path/to/python): `pip install -r requirements.txt` plus the CUDA jax plugin
# (`pip install "jax[cuda12]==<the pinned jax>"`). It installs nothing. The markdown goes to
# stdout and to $OUT/gpu_check.md when $OUT is set, and to --out PATH when given (both if both);
# the Python processes' stderr goes to the same name with .log. Without --tiny, it stops at once,
# with one line, if JAX sees no GPU.
#
# Sections (benchmarks/gpu_bench.py; every call is its own process with its own time limit, so
# a failure or a hang costs only its own budget: it prints one line and the next one runs):
#   A. sigmoid_loss and conditional_sigmoid_loss (max_present=8) fwd+bwd at B = 4096, 16384,
#      65536, D = 768, bf16: median ms, compiled temp bytes, peak_bytes_in_use; K = 64, and
#      K = 1024 at B = 4096. A size that would not fit its budget prints "—".
#   B. SigLIP and CCLIP B/16 train steps on 1 device (batch 512, 256 on OOM): examples/s, MFU.
# --tiny: B = 128, 256, 512, D = 64, K = 32 / 128; the demo's mu towers at batch 16, 3 steps.
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

TINY=0
OUT_ARG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --out) OUT_ARG="${2:?--out needs a path}"; shift ;;
    --out=*) OUT_ARG="${1#--out=}" ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-$(command -v python || command -v python3)}"
FILES=()
[ -n "${OUT:-}" ] && FILES+=("$OUT/gpu_check.md")
[ -n "$OUT_ARG" ] && FILES+=("$OUT_ARG")
LOGS=()
for f in ${FILES[@]+"${FILES[@]}"}; do
  mkdir -p "$(dirname "$f")" && : > "$f" && LOGS+=("${f%.md}.log") && : > "${f%.md}.log"
done
CACHE="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$CACHE"' EXIT
START=$SECONDS

if [ "$TINY" = 1 ]; then
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
  TOTAL=300; MARGIN=8                      # seconds: the whole run; imports before a budget
  SIZES=128,256,512; BIG_K_SIZES=128; DIM=64; K=32; BIG_K=128
  SIGLIP=(--config configs/siglip_demo.py); CCLIP=(--config configs/demo.py)
  BATCHES=16; STEPS=3; REPS=5
  T_HEAD=60; T_SIG=40; T_COND=60; T_BIGK=40; T_SIGLIP=90; T_CCLIP=90
else
  TOTAL=470; MARGIN=20
  SIZES=4096,16384,65536; BIG_K_SIZES=4096; DIM=768; K=64; BIG_K=1024
  SIGLIP=(--config configs/siglip_b16.py:gpu); CCLIP=(--config configs/cclip_b16.py:gpu)
  BATCHES=512,256; STEPS=10; REPS=10
  T_HEAD=30; T_SIG=40; T_COND=75; T_BIGK=30; T_SIGLIP=140; T_CCLIP=150
fi

header_unless() {  # header_unless PREFIX: --table_header if no output line starts with PREFIX
  grep -qF -- "$1" "$CACHE/stdout" 2>/dev/null || echo --table_header
}

emit() {  # a line to stdout and the markdown files
  printf '%s\n' "$*" | tee -a ${FILES[@]+"${FILES[@]}"}
}

section() {  # section NAME LIMIT_S gpu_bench.py-args...: one process, limited to LIMIT_S
  local name=$1 limit=$2 err rc left
  shift 2
  left=$((TOTAL - (SECONDS - START)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -le "$MARGIN" ]; then
    emit "> $name: skipped (the run's ${TOTAL} s are spent)"
    return 1
  fi
  err="$CACHE/stderr"
  timeout -k 5 "$limit" "$PY" -u benchmarks/gpu_bench.py "$@" --budget $((limit - MARGIN)) \
    2>"$err" | tee -a "$CACHE/stdout" ${FILES[@]+"${FILES[@]}"}
  rc=${PIPESTATUS[0]}
  for log in ${LOGS[@]+"${LOGS[@]}"}; do
    { echo "===== $name (rc $rc)"; cat "$err"; } >> "$log"
  done
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    emit "> $name: stopped at its ${limit} s limit (rows above it are complete)"
  elif [ "$rc" != 0 ]; then
    emit "> $name failed (rc $rc): $(grep -v '^[[:space:]]*$' "$err" | tail -n 1 | cut -c1-300)"
  fi
  return "$rc"
}

header() {  # the header process; no --budget
  local err="$CACHE/stderr" rc
  timeout -k 5 "$T_HEAD" "$PY" -u benchmarks/gpu_bench.py header "$@" 2>"$err" \
    | tee -a ${FILES[@]+"${FILES[@]}"}
  rc=${PIPESTATUS[0]}
  for log in ${LOGS[@]+"${LOGS[@]}"}; do { echo "===== header (rc $rc)"; cat "$err"; } >> "$log"; done
  if [ "$rc" != 0 ] && [ "$rc" != 2 ]; then
    emit "ERROR: the header process failed (rc $rc): $(grep -v '^[[:space:]]*$' "$err" | tail -n 1)"
  fi
  return "$rc"
}

TINY_FLAG=()
[ "$TINY" = 1 ] && TINY_FLAG=(--tiny)
header ${TINY_FLAG[@]+"${TINY_FLAG[@]}"} || exit 1

emit "## A. Losses: jit(value_and_grad) fwd+bwd, bfloat16 [B, D] inputs"
emit ""
emit "Median of up to $REPS timed calls after a warm-up; conditional_sigmoid_loss with its default"
emit "weights and normalisation, labels with exactly 8 present concepts per row. Temp MiB: the"
emit "compiled program's temporaries; peak MiB: peak_bytes_in_use of the process (inputs and"
emit "gradients included; one process per loss, sizes ascending). Budgets: ${T_SIG} / ${T_COND} / ${T_BIGK} s."
emit ""
A=(losses --sizes "$SIZES" --dim "$DIM" --reps "$REPS")
section "A. sigmoid_loss" "$T_SIG" "${A[@]}" --kind sigmoid --table_header
section "A. conditional K=$K" "$T_COND" "${A[@]}" --kind conditional --k "$K" \
  $(header_unless "| loss |")
section "A. conditional K=$BIG_K" "$T_BIGK" "${A[@]}" --kind conditional --k "$BIG_K" \
  --sizes "$BIG_K_SIZES" $(header_unless "| loss |")
emit ""

emit "## B. Train steps on one device (mesh data=fsdp=tensor=1), synthetic batches"
emit ""
emit "Budgets: ${T_SIGLIP} / ${T_CCLIP} s."
emit ""
B=(train --batches "$BATCHES" --steps "$STEPS" --cache_dir "$CACHE")
section "B. SigLIP step" "$T_SIGLIP" "${B[@]}" "${SIGLIP[@]}" --table_header
section "B. CCLIP step" "$T_CCLIP" "${B[@]}" "${CCLIP[@]}" $(header_unless "| step |")
emit ""
emit "Total: $((SECONDS - START)) s."
exit 0
