#!/usr/bin/env bash
# Batch generation on the GPU (issue 15): a WorldScore-shaped static batch of 8 cases (the bundled
# RGB-D example under each of WorldScore's 8 camera layouts, 512² input, 50 frames at 512²),
# offline profile, through `python -m engine batch` (Dask, one resident worker per GPU), against a
# plain loop over the same cases (`generate` + `render-path --preset worldscore`, a fresh process
# each, as by hand).  Writes $OUT/gpu_batch_<phase>.json and the logs.
#   run (one H200): bash bench/gpu_batch.sh            carry .whl (dask, distributed, locket, partd, tblib, tornado, zict)
#   PHASE=batch|loop|both (default both), STEPS (default 4), ITERATIONS (default 0: the default 3DGS schedule);
#   DEVICE, RESOLUTION, FRAME_SIZE, CASES (cuda, 512, 512, 8) only to try the script small on a CPU.
#   On nvidia-h200-x2/x4 PHASE=batch runs one worker per GPU (issue 17).
set -uo pipefail
source bench/gpu_env.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}; PHASE=${PHASE:-both}; STEPS=${STEPS:-4}; ITERATIONS=${ITERATIONS:-0}
DEVICE=${DEVICE:-cuda}; RESOLUTION=${RESOLUTION:-512}; FRAME_SIZE=${FRAME_SIZE:-512}; CASES=${CASES:-8}
WORK=/tmp/gpu_batch; rm -rf "$WORK"; mkdir -p "$WORK" "$OUT"
GEN=(--profile offline --device "$DEVICE" --resolution "$RESOLUTION" --steps "$STEPS" --iterations "$ITERATIONS")
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "$DEVICE"; } | tee "$OUT/gpu.txt"

# The manifest, as WorldScore's DATA_PATH/WorldScore-Dataset/static/static.json.
python3 - "$WORK" "$CASES" <<'EOF'
import json, shutil, sys
from pathlib import Path
work = Path(sys.argv[1]); static = work / "WorldScore-Dataset" / "static"
folder = static / "photorealistic" / "outdoor" / "courtyard"; folder.mkdir(parents=True)
layouts = ["push_in", "pull_out", "move_left", "move_right", "orbit_left", "orbit_right", "pan_left", "pan_right"][: int(sys.argv[2])]
entries = []
for k, layout in enumerate(layouts):
    shutil.copyfile("examples/courtyard/image.png", folder / f"{k:03d}.png")
    entries.append({"image": f"static/photorealistic/outdoor/courtyard/{k:03d}.png", "depth": str(Path("examples/courtyard/depth.png").resolve()),
                    "visual_movement": "static", "visual_style": "photorealistic", "scene_type": "outdoor", "camera_path": [layout],
                    "style": "Photorealistic.", "prompt_list": ["a stone courtyard", "a sunny garden"], "content_list": [["pillar"], ["tree"]]})
(static / "static.json").write_text(json.dumps(entries, indent=1))
EOF
MANIFEST=$WORK/WorldScore-Dataset/static/static.json

# gsplat's one-off CUDA build and the first CUDA start, outside both timings.
/usr/bin/time -f "warm-up %e s" python3 -m engine generate examples/courtyard/image.png --depth examples/courtyard/depth.png \
  --out "$WORK/warmup" --profile offline --device "$DEVICE" --resolution 64 --steps 1 --iterations 10 > /dev/null 2> "$OUT/warmup_stderr.txt"
tail -1 "$OUT/warmup_stderr.txt"

if [[ $PHASE == batch || $PHASE == both ]]; then
  start=$(date +%s.%N)
  python3 -m engine batch "$MANIFEST" --out "$WORK/batch" "${GEN[@]}" --frame-size "$FRAME_SIZE" > "$OUT/batch_events.jsonl" 2> "$OUT/batch_stderr.txt"
  rc=$?; end=$(date +%s.%N)
  tail -12 "$OUT/batch_stderr.txt"
  cp "$WORK/batch/summary.json" "$OUT/batch_summary.json"
  python3 - "$OUT" "$rc" "$start" "$end" "$STEPS" "$ITERATIONS" "$RESOLUTION" "$FRAME_SIZE" <<'EOF'
import json, sys
out, rc, start, end, steps, iterations = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
s = json.load(open(f"{out}/batch_summary.json")); wall = end - start
busy = sum(r["seconds"] for r in s["cases"])
result = {"what": "engine batch, WorldScore layout, offline profile (given depth)", "settings": f"{sys.argv[7]} px, steps {steps}, iterations {iterations}, 50 frames at {sys.argv[8]}^2",
          "gpu": open(f"{out}/gpu.txt").read().strip(), "rc": rc, "counts": s["counts"], "workers": s["workers"],
          "wall_s_command": round(wall, 2), "wall_s_cases": s["wall_seconds"], "case_seconds": [r["seconds"] for r in s["cases"]],
          "cases_per_hour": round(s["counts"]["done"] / wall * 3600, 1),
          "overhead_s": round(wall - busy / max(1, s["workers"]), 2)}  # cluster start/stop, scheduling, skips
json.dump(result, open(f"{out}/gpu_batch_batch.json", "w"), indent=1); print(json.dumps(result))
EOF
fi

if [[ $PHASE == loop || $PHASE == both ]]; then
  # The same cases by hand: the inputs the batch prepares (crop, depth, camera, path), then
  # one generate and one render-path process per case.
  python3 - "$MANIFEST" "$WORK/loop" "$STEPS" <<'EOF'
import json, sys
from pathlib import Path
from engine import batch
cases, _ = batch.load_manifest(Path(sys.argv[1]), "worldscore")
options = {"profile": "offline", "settings": {"steps": int(sys.argv[3])}, "camera_speed": 0.5}
for k, case in enumerate(cases):
    argv = batch._worldscore_inputs(case, options, Path(sys.argv[2]) / f"{k:03d}" / "inputs_ws")
    Path(sys.argv[2], f"{k:03d}", "argv.json").write_text(json.dumps({"argv": argv, "layout": case.worldscore["camera_path"][0]}))
EOF
  start=$(date +%s.%N); : > "$OUT/loop_cases.txt"
  for k in $(seq -f "%03g" 0 $((CASES - 1))); do
    case_start=$(date +%s.%N)
    mapfile -t argv < <(python3 -c "import json,sys; [print(a) for a in json.load(open(sys.argv[1]))['argv']]" "$WORK/loop/$k/argv.json")
    layout=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['layout'])" "$WORK/loop/$k/argv.json")
    python3 -m engine generate "${argv[@]}" --out "$WORK/loop/$k/job" "${GEN[@]}" > /dev/null 2>> "$OUT/loop_stderr.txt" \
      && python3 -m engine render-path "$WORK/loop/$k/job" --out "$WORK/loop/$k/ws" --preset worldscore --layout "$layout" \
         --width "$FRAME_SIZE" --height "$FRAME_SIZE" --device "$DEVICE" > /dev/null 2>> "$OUT/loop_stderr.txt"
    echo "$k $layout rc=$? $(python3 -c "print(round($(date +%s.%N) - $case_start, 2))")" | tee -a "$OUT/loop_cases.txt"
  done
  end=$(date +%s.%N)
  python3 - "$OUT" "$start" "$end" "$STEPS" "$ITERATIONS" "$RESOLUTION" "$FRAME_SIZE" <<'EOF'
import json, sys
out, start, end, steps, iterations = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = [line.split() for line in open(f"{out}/loop_cases.txt")]; wall = end - start
ok = sum(r[2] == "rc=0" for r in rows)
result = {"what": "plain loop: generate + render-path --preset worldscore per case, fresh processes", "settings": f"{sys.argv[6]} px, steps {steps}, iterations {iterations}, 50 frames at {sys.argv[7]}^2",
          "gpu": open(f"{out}/gpu.txt").read().strip(), "done": ok, "wall_s": round(wall, 2), "case_seconds": [float(r[3]) for r in rows],
          "cases_per_hour": round(ok / wall * 3600, 1)}
json.dump(result, open(f"{out}/gpu_batch_loop.json", "w"), indent=1); print(json.dumps(result))
EOF
fi
