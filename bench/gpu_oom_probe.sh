#!/usr/bin/env bash
# One device-tool call: the real CUDA out-of-memory test alone, its job folders kept under $OUT/pytest
# (engine.log of both runs: where the re-run after the card was freed failed).
#   run: bash bench/gpu_session.sh bench/gpu_oom_probe.sh:120   (carry .whl)
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
python3 -m pytest -q -p no:cacheprovider -x -m gpu --basetemp="$OUT/pytest" \
  tests/test_reliability_faults.py -k real_cuda_out_of_memory 2>&1 | tail -30
find "$OUT/pytest" -name engine.log -exec sh -c 'echo "== $1"; grep -n "Error\|error\|Traceback\|File" "$1" | tail -25' _ {} \;
find "$OUT/pytest" -type f ! -name engine.log ! -name job.json -delete  # bring back only the logs
