#!/usr/bin/env bash
# Issue 13 on the GPU machine, one device call: CUDA tests, gsplat build (engine warmup), the 3DGS
# schedule sweep on eval-rgbd, then (with "compare") today's default vs the new one end to end.
#   bash bench/gpu_issue13.sh [sweep|compare|all]      (results under $OUT)
#   WHAT=compare E2E_SKIP="today eval" bash bench/gpu_issue13.sh   (as bench/gpu_session.sh runs it: no arguments)
set -u
source bench/gpu_env.sh
what=${1:-${WHAT:-all}}
export OUT=${OUT:-bench/out}
if [[ $what == sweep || $what == all ]]; then
  python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py tests/test_splat_rasterize.py tests/test_splat_train.py 2>&1 | tail -5
  python3 -m engine warmup --device cuda | tail -1
  python3 bench/splat_schedule.py --device cuda --resolution 320 --out "$OUT"
fi
if [[ $what == compare || $what == all ]]; then
  python3 bench/e2e_compare.py --out "$OUT" ${E2E_SKIP:+--skip $E2E_SKIP}
fi
