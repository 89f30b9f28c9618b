#!/usr/bin/env bash
# One device-tool call on the GPU machine: the reliability faults that need CUDA, for real.
#   * a real CUDA out-of-memory: the card filled when the 3DGS stage starts, its own allocations fail;
#   * cancel (SIGINT) inside each of the 7 stages on CUDA, the latency from the signal to the exit.
# run: bash bench/gpu_faults.sh   (carry .whl; results land in $OUT: faults.jsonl, junit.xml, run.json, pytest.txt)
# then, here: .venv/bin/python scripts/reliability_report.py --gpu <the fetched $OUT folder>; keep the run as
# bench/results/DATE-DEVICE-faults.jsonl, .junit.xml and .run.json (add "command" and "engine" to run.json).
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/tmp/out}
export GEN3D_FAULT_REPORT="$OUT/faults.jsonl"
rm -f "$GEN3D_FAULT_REPORT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
printf '{"date": "%s", "device": "%s"}\n' "$(date -u +%F)" "$(head -1 "$OUT/device.txt")" > "$OUT/run.json"
python3 -m pytest -q -p no:cacheprovider -rs -m gpu --junitxml="$OUT/junit.xml" tests/test_reliability_faults.py \
  2>&1 | tail -40 | tee "$OUT/pytest.txt"
python3 -c "import json,sys; [print(r['fault'], r.get('latency_s', ''), r.get('stopped', ''), r['lost']) for r in map(json.loads, open(sys.argv[1]))]" "$GEN3D_FAULT_REPORT"
