#!/usr/bin/env bash
# The README's main job: set up .venv, generate a scene from the bundled RGB-D example with the
# offline profile (no model weights needed), and import it into jobs/courtyard/courtyard.blend.
# CPU-sized settings (about 2 minutes on 2 cores); on a GPU: GEN3D_ARGS="--device cuda --resolution 320
# --steps 8" (the full 3DGS recipe is the default on CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
example=examples/courtyard
job=${1:-jobs/courtyard}
start=$(date +%s)
mkdir -p "$(dirname "$job")"
# shellcheck disable=SC2086  # GEN3D_ARGS is a list of arguments
.venv/bin/python -m engine generate "$example/image.png" --depth "$example/depth.png" \
  --camera "$example/camera.json" --profile offline --out "$job" \
  ${GEN3D_ARGS:---device cpu --resolution 224 --steps 4 --iterations 200 --set reprojections=2} > "$job.events.jsonl" || {
  echo "example: the engine failed; see $job/engine.log and $job.events.jsonl" >&2; exit 1; }
.venv/bin/python scripts/import_to_blend.py "$job" "$job/courtyard.blend"
echo "example: done in $(( $(date +%s) - start )) s -> $job/ (points.ply, gaussians.ply, courtyard.blend)" >&2
