#!/usr/bin/env bash
# One device call: where the warm generate run's time goes (cProfile of a third, warm run of the
# new default; profile `bench`, 512², N = 8, resident), and gsplat against our torch rasterizer in
# both image formations.
#   run: bash bench/gpu_session.sh bench/gpu_profile.sh:330 bench/gpu_sky.sh:150   (carry .whl)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
record_device
python3 -m engine warmup --device cuda | tail -1  # gsplat's CUDA, once
python3 bench/gsplat_agreement.py > /dev/null; echo "gsplat_agreement exit $?"
python3 bench/bench_models.py build > /dev/null
python3 bench/bench_models.py e2e --runs 8 8 8 --cprofile --out "$OUT"
