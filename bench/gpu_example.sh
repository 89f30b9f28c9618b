#!/usr/bin/env bash
# One device-tool call on the H100: the README's GPU variant of the main job (offline profile,
# 320 px, 8 expansion views, LucidDreamer's full 3DGS schedule with gsplat), and the CUDA-only tests.
#   run: bash bench/gpu_example.sh   (carry .whl; results land in $OUT)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
python3 -m pytest -q -p no:cacheprovider tests/test_pointcloud.py tests/test_align.py tests/test_splat_rasterize.py tests/test_splat_train.py 2>&1 | tail -30 | tee "$OUT/cuda_tests.txt"
example=examples/courtyard
for run in first second; do  # the second run shows the time without gsplat's one-off CUDA build
  rm -rf /tmp/job
  /usr/bin/time -f "%e s wall" python3 -m engine generate "$example/image.png" --depth "$example/depth.png" \
    --camera "$example/camera.json" --profile offline --out /tmp/job --device cuda --resolution 320 --steps 8 \
    > "$OUT/example_events_$run.jsonl" 2> "$OUT/example_stderr_$run.txt"
  grep -E "stage .* done|wall" "$OUT/example_stderr_$run.txt"
done
grep -h '"stage_done"' "$OUT/example_events_second.jsonl" | python3 -c "import sys,json; [print(e['stage'], e['seconds'], e.get('peak_vram_mb')) for e in map(json.loads, sys.stdin)]"
