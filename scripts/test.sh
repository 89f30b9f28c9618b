#!/usr/bin/env bash
# The test command (README, CI): set up .venv if needed, run the whole suite on Blender 5.0, then
# the Blender-side tests on 4.2 and 4.5 LTS (scripts/test_blender_lts.sh; skip with GEN3D_LTS=0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
[ "${GEN3D_LTS:-1}" = 0 ] || bash scripts/test_blender_lts.sh
