#!/usr/bin/env bash
# The Blender-side tests on the older LTS releases the add-on supports (blender_version_min):
# each bpy in its own small environment (.venv-bpy42, .venv-bpy45: bpy, numpy, pytest, nothing
# of the engine's), with the numpy that Blender release bundles.  Tests that need the engine's
# packages in the test process (marker "engine") run on 5.0 only (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
FILES=(tests/test_blender_import.py tests/test_blender_camera.py tests/test_blender_camera_path.py tests/test_blender_transform.py)
for pair in 42:4.2.23 45:4.5.15; do
  venv=.venv-bpy${pair%%:*} version=${pair##*:}
  want="bpy==$version numpy==1.26.4 pytest>=8"
  if [ "$(cat "$venv/.gen3d-requirements" 2>/dev/null)" != "$want" ]; then
    echo "setup: $venv (Blender $version as a module)..." >&2
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --disable-pip-version-check -q $want
    echo "$want" > "$venv/.gen3d-requirements"
  fi
  echo "Blender $version:" >&2
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not engine and not gpu" "${FILES[@]}" "$@"
done
