#!/usr/bin/env bash
# One device-tool call: the sky layer on CUDA (bench/sky_layer.py): the bundled example with and without
# the sky, RGB-D, offline profile (OpenCV fills the panorama: the GPU machine has no real SD weights),
# 512 px, 4 expansion views, the product's CUDA schedule (3DGS and the sky's 300 steps), three seeds.
#   run: bash bench/gpu_session.sh bench/gpu_sky.sh:150   (carry .whl)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
record_device
python3 -m engine warmup --device cuda | tail -1  # gsplat's CUDA, once
python3 bench/sky_layer.py --device cuda --resolution 512 --steps 4 --default-schedule --seeds ${SEEDS:-0 1 2} --out /tmp/sky-layer
cp /tmp/sky-layer/sky_layer.json "$OUT/"
