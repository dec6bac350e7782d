#!/usr/bin/env bash
# Builds .whl/: the wheels jaxlm needs on the H200 image beyond what that image ships (Python
# 3.12, jax 0.11 + CUDA 13, flax, optax, orbax, torch, transformers; no registry there).
# Run here, in the repository root; the device call carries .whl (see benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
# grain (+ array-record, portpicker): the data pipeline of train.py; omegaconf: config parsing;
# tensorboardX: the run's TensorBoard events. Everything else they need is on the image.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  "grain==0.2.18" "array-record>=0.8.1" portpicker "omegaconf>=2.3" "tensorboardX>=2.6"
du -sh .whl && ls .whl
