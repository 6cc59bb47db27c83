#!/usr/bin/env bash
# CUDA determinism check, for a machine with one GPU (< 5 minutes):
#   train twice on the GPU and compare weight bytes, verify the lock, then the
#   same on the CPU for comparison. Prints the GPU model and a verdict line per
#   device; exits non-zero if any pair differs.
#
#   bash scripts/gpu_check.sh [REPRO]     # REPRO defaults to ".venv/bin/repro" or "repro"
set -uo pipefail
cd "$(dirname "$0")/.."
REPRO=${1:-$( [ -x .venv/bin/repro ] && echo .venv/bin/repro || echo repro )}
PY=$(dirname "$(command -v "$REPRO")")/python
[ -x "$PY" ] || PY=python3
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1
OUT=${GPU_CHECK_OUT:-out/gpu-check}
rm -rf "$OUT"
"$PY" - <<'PY' || { echo "gpu_check: no CUDA device visible to torch"; exit 3; }
import torch
assert torch.cuda.is_available()
p = torch.cuda.get_device_properties(0)
print(f"gpu: {p.name}  cc {p.major}.{p.minor}  torch {torch.__version__}  cuda {torch.version.cuda}  cudnn {torch.backends.cudnn.version()}")
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
status=0
for dev in cuda cpu; do
  for run in a b; do
    "$REPRO" train --quiet "build.device=$dev" "out_dir=$OUT/$dev-$run" >"$OUT.$dev-$run.log" 2>&1 \
      || { echo "$dev: train $run failed:"; tail -5 "$OUT.$dev-$run.log"; status=1; continue 2; }
  done
  a=$(sha256sum "$OUT/$dev-a/model.safetensors" | cut -d' ' -f1)
  b=$(sha256sum "$OUT/$dev-b/model.safetensors" | cut -d' ' -f1)
  if [ "$a" = "$b" ] && cmp -s "$OUT/$dev-a/repro.lock" "$OUT/$dev-b/repro.lock"; then
    echo "$dev: two runs bit-identical ($a)"
  else
    echo "$dev: two runs DIFFER ($a vs $b)"; status=1
  fi
  if "$REPRO" --help | grep -q ' verify '; then
    "$REPRO" verify --quiet "$OUT/$dev-a/repro.lock" --root . >"$OUT.$dev-verify.log" 2>&1
    rc=$?; echo "$dev: repro verify exit $rc"; [ $rc -eq 0 ] || { tail -20 "$OUT.$dev-verify.log"; status=1; }
  fi
done
exit $status
