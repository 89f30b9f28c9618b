#!/usr/bin/env bash
# The README's main job: set up .venv, generate a scene from the bundled RGB-D example with the
# offline profile (no model weights needed), and import it into jobs/courtyard/courtyard.blend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
example=examples/courtyard
job=${1:-jobs/courtyard}
start=$(date +%s)
.venv/bin/python -m engine generate "$example/image.png" --depth "$example/depth.png" \
  --camera "$example/camera.json" --profile offline --out "$job" > "$job.events.jsonl" || {
  echo "example: the engine failed; see $job/engine.log and $job.events.jsonl" >&2; exit 1; }
.venv/bin/python scripts/import_to_blend.py "$job" "$job/courtyard.blend"
echo "example: done in $(( $(date +%s) - start )) s -> $job/ (points.ply, gaussians.ply, courtyard.blend)" >&2
