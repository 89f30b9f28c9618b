#!/usr/bin/env bash
# One device-tool call (or a part of one after bench/gpu_eval_world.sh): eval-world at 512x384 on CUDA
# at the typical level's parts one at a time (bench/eval_world_error_parts.py: per-view scale and
# shift, smooth warp, blurred edges), three scenes side by side; files SCENE-PART.json in $OUT.
# Shares /tmp/ew/jobs-SCENE with gpu_eval_world.sh, so true depth resumes when that ran first.
#   run: bash bench/gpu_session.sh bench/gpu_eval_world_variants.sh:360 bench/gpu_eval_world_error_parts.sh:200
#        (carry .whl and .eval-scenes)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
record_device
python3 -m engine warmup --device cuda 2>/dev/null | tail -1
mkdir -p /tmp/ew
for scene in courtyard room street; do
  python3 bench/eval_world_error_parts.py --scene "$scene" --out "/tmp/ew/parts-$scene" --jobs "/tmp/ew/jobs-$scene" \
    --resolution 512 --device cuda --scene-cache .eval-scenes > "/tmp/ew/parts-$scene.events.jsonl" 2> "$OUT/parts-$scene.stderr.txt" &
done
wait
for scene in courtyard room street; do
  for part in /tmp/ew/parts-$scene/*/; do cp "$part/eval_world.json" "$OUT/$scene-$(basename "$part").json"; done
  grep -A8 "^eval-world $scene" "$OUT/parts-$scene.stderr.txt"
done
