#!/usr/bin/env bash
# The command the H200 call runs (and its CPU rehearsal): the carried wheels into /tmp/site,
# then the suite, its log and results under $OUT. Extra arguments go to gpu_suite.py.
#   on the GPU:  bash benchmarks/gpu_run.sh
#   rehearsal:   OUT=/tmp/gpu_dry PATH=<py3.12 venv>/bin:$PATH bash benchmarks/gpu_run.sh --cpu-dry-run
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu_out}"
mkdir -p "$out"
rm -rf /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || { echo "wheel install failed (run benchmarks/gpu_wheels.sh here first)"; exit 1; }
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi
python3 benchmarks/gpu_suite.py --out "$out" "$@" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
