#!/usr/bin/env bash
# One device-tool call on the H100: point rendering + alignment timings (bench_geometry.py), the
# CUDA-only geometry tests, and eval-rgbd with gsplat at the example's full resolution.
#   run: bash bench/gpu_geometry_eval.sh   (carry .whl; results land in $OUT)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 bench/bench_geometry.py --json "$OUT/geometry.json" 2>&1 | tee "$OUT/geometry.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_pointcloud.py tests/test_align.py tests/test_splat_rasterize.py tests/test_splat_train.py 2>&1 | tail -3 | tee "$OUT/cuda_tests.txt"
# gsplat compiles its CUDA on first use (~90 s); the eval then trains LucidDreamer's full recipe.
time python3 -m engine eval-rgbd --out /tmp/eval --device cuda --resolution 320 > "$OUT/eval_events.jsonl" 2> "$OUT/eval_stderr.txt"
cp /tmp/eval/eval.json "$OUT/eval.json" 2>/dev/null
tail -25 "$OUT/eval_stderr.txt"
