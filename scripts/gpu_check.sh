#!/usr/bin/env bash
# The GPU checks, in one run of about 5-8 minutes on a machine with a CUDA device:
#   1. the tests marked `gpu` (CUDA paths of the models, Leap and A2C);
#   2. A2C training throughput with the network on CUDA and the games on CPU threads
#      (ale-py's native vector env), for the Nature CNN, the Mnih et al. 2013 CNN (fp32
#      and bf16 autocast) and convrnn_atari, beside the raw env rate, in one run.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (default: $OUT, else ./gpu_check)
# Uses .venv if present (scripts/setup.sh creates it), else the python on PATH.
# Writes OUT_DIR/pytest_gpu.log, OUT_DIR/atari_throughput_cuda.log (JSON on its last
# line) and OUT_DIR/summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check}}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=python
[ -x .venv/bin/python ] && PY=.venv/bin/python

"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "gpu_check: no CUDA device visible to torch"
print("gpu_check:", torch.__version__, torch.cuda.get_device_name(0))
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

status=0
echo "gpu_check: tests marked gpu"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$OUT_DIR/pytest_gpu.log" \
  || status=1

echo "gpu_check: A2C throughput, network on CUDA, games on CPU threads"
timeout 270 "$PY" -m benchmarks.atari_throughput --device cuda --rounds 3 --seconds 2 \
  --figures nature_cnn nature_cnn_bf16 mnih2013 mnih2013_bf16 convrnn_atari \
  2>&1 | tee "$OUT_DIR/atari_throughput_cuda.log" || status=1

"$PY" - "$OUT_DIR" "$status" <<'PYEOF'
import json, pathlib, sys
out, status = pathlib.Path(sys.argv[1]), int(sys.argv[2])
lines = (out / "atari_throughput_cuda.log").read_text().strip().splitlines()
bench = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
tests = (out / "pytest_gpu.log").read_text().strip().splitlines()
summary = {
    "tests": tests[-1] if tests else None,
    "raw_env_steps_per_s": bench and bench["raw_env_steps_per_s"],
    "train_env_steps_per_s": bench and bench["train_env_steps_per_s"],
    "train_to_env_ratios": bench and bench["train_to_env_ratios"],
    "status": status,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PYEOF
exit "$status"
