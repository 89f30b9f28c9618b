#!/usr/bin/env bash
# One device call: where a cold run's time goes — cProfile of the first generate run of a fresh
# process after set-up (profile `bench`, 512², N = 8, resident; its totals add up every thread's
# time, the loading threads' included, so they exceed the run's wall time).
#   run: bash bench/gpu_session.sh bench/gpu_cold_profile.sh:300   (carry .whl)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
record_device
python3 -m engine warmup --device cuda | tail -1  # gsplat's CUDA, once
python3 bench/bench_models.py build > /dev/null
python3 bench/bench_models.py e2e --runs 8 --cprofile --out "$OUT"  # one run: the cold one is the profiled last
