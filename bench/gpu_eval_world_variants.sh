#!/usr/bin/env bash
# One device-tool call: eval-world at 512x384 on CUDA (bench/gpu_eval_world.sh) for the default and
# then for each settings variant of "ours" in VARIANTS (space-separated NAME=VALUE), on LEVELS; the
# variants' runs share the default's job folders, so only "ours" trains again.  Files are named
# SCENE-LEVEL-LABEL.json (LABEL: default, or the variant with "=" as "_").  DEFAULT=0 skips the
# default's run (the first variant then trains the baselines).
#   run: VARIANTS="align_seam_spread=3 align_seam_tolerance=0.1" LEVELS="none mild typical" \
#        bash bench/gpu_session.sh bench/gpu_eval_world_variants.sh:560   (carry .whl and .eval-scenes)
set -uo pipefail
source bench/gpu_env.sh
export LEVELS=${LEVELS:-none typical}
python3 -m engine warmup --device cuda 2>/dev/null | tail -1  # gsplat's CUDA, once, before three processes want it
[ "${DEFAULT:-1}" = 0 ] || LABEL=default SET= bash bench/gpu_eval_world.sh
for variant in ${VARIANTS:-}; do
  LABEL=${variant//=/_} SET=$variant bash bench/gpu_eval_world.sh
done
