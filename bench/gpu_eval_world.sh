#!/usr/bin/env bash
# One device-tool call: the full eval-world table (3 scenes x 4 depth error levels x 5 methods) at
# 512x384 with gsplat on CUDA, JSON per run into $OUT.  The GPU machine has no Blender, so render the
# scenes here first (Cycles on the CPU: courtyard at 512 px took 2 min 14 s wall on the 2 shared cores, 9.5 MB; all three ~30 MB) and carry them with the wheels:
#   for s in courtyard room street; do .venv/bin/python -m engine eval-world --scene $s --resolution 512 \
#       --scene-cache .eval-scenes --render-only; done
#   run: bash bench/gpu_eval_world.sh   (carry .whl and .eval-scenes; ITERATIONS=N overrides the default schedule's 3DGS steps,
#        LEVELS="none typical" picks levels, SET=NAME=VALUE gives "ours" a settings variant, LABEL names its files)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
ITERATIONS=${ITERATIONS:-}  # empty: the product default schedule on CUDA (engine/splat/train.py)
LEVELS=${LEVELS:-none mild typical severe}
SET=${SET:-}
LABEL=${LABEL:-}
record_device
# The three scenes side by side on the one GPU (each process ~5 GB); levels in turn, sharing one jobs
# folder per scene so true_depth (the same at every level) is trained once.  gsplat builds its CUDA
# once (~90 s; the other processes wait on its lock).  The events stay on the machine: the tool brings
# back at most 16 MiB a file (2026-12-03: one call's archive with them was 29 MB and came back empty).
mkdir -p /tmp/ew
for scene in courtyard room street; do
  (
    for level in $LEVELS; do
      name=$scene-$level${LABEL:+-$LABEL}
      python3 -m engine eval-world --scene "$scene" --level "$level" --out "/tmp/ew/$name" \
        --jobs "/tmp/ew/jobs-$scene" --resolution 512 ${ITERATIONS:+--iterations "$ITERATIONS"} --device cuda \
        ${SET:+--set "$SET"} --scene-cache .eval-scenes > "/tmp/ew/$name.events.jsonl" 2> "$OUT/$name.stderr.txt"
      cp "/tmp/ew/$name/eval_world.json" "$OUT/$name.json"
      cp "/tmp/ew/$name/renders/heldout_01.png" "$OUT/$name-heldout_01.png" 2>/dev/null
    done
  ) &
done
wait
for scene in courtyard room street; do for level in $LEVELS; do
  name=$scene-$level${LABEL:+-$LABEL}
  echo "== $name${SET:+ (ours: $SET)}"
  grep -A8 "^eval-world $scene" "$OUT/$name.stderr.txt" || tail -5 "$OUT/$name.stderr.txt"
done; done
