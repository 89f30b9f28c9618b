#!/usr/bin/env bash
# One device-tool call (or one part of bench/gpu_session.sh): the tests with CUDA paths, on CUDA —
# CUDA graphs, gsplat against our rasterizer, 3DGS training (fused Adam), SAM and MoGe-2 loaded on
# the device, prefetched loads, the SD backends.
#   run: bash bench/gpu_session.sh bench/gpu_tests.sh:150   (carry .whl)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda_graphs.py tests/test_splat_rasterize.py \
  tests/test_splat_train.py tests/test_segment.py tests/test_depth.py tests/test_pipeline.py tests/test_inpaint.py \
  2>&1 | tail -30 | tee "$OUT/cuda_tests.txt"
