#!/usr/bin/env bash
# Everything a GPU lease should run, in one call (ENVIRONMENT.md: leases are short).
#   bash scripts/gpu_check.sh            # results under benchmarks/results/ (or $OUT when set)
# Builds the extension for the local GPU, runs the whole test suite on it (Triton runs for real,
# the `cuda` tests are no longer skipped), then the op benchmarks (fp32 and bf16, both SPEC §5
# sizes) and the end-to-end train-step benchmarks, writing JSON named after the device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
$PY -m pip install -q -e . --no-build-isolation --no-deps
tag=$($PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_').replace('/', '_'))")
$PY -m pytest -q -rfE -p no:cacheprovider tests/ 2>&1 | tee "$out/gpu_tests_$tag.log" || true
$PY -m benchmarks.run --device cuda --out "$out/gpu_${tag}_float32.json"
$PY -m benchmarks.run --device cuda --dtype bfloat16 --out "$out/gpu_${tag}_bfloat16.json"
$PY -m benchmarks.train_step --out "$out/gpu_${tag}_train_step_resnet50_448_bf16.json"
$PY -m benchmarks.train_step --head-only --out "$out/gpu_${tag}_train_step_head_only.json"
