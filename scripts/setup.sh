#!/usr/bin/env bash
# Create (or update) the project environment in .venv/: the engine's packages, Blender 5.0 as a
# module (bpy) and pytest.  Idempotent: it reinstalls only when a requirements file changed.
# GEN3D_TORCH_INDEX=https://download.pytorch.org/whl/cpu picks PyTorch's small CPU build where
# that index is reachable; the default takes torch from PyPI (a CUDA build on Linux x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "setup: Python 3.11 is needed (Blender 5.0's bpy module is built for it); set PYTHON=/path/to/python3.11" >&2
  exit 1
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.gen3d-requirements
want=$(cat requirements/*.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
  echo "setup: installing PyTorch (first time only)..." >&2
  "${pip[@]}" torch==2.14.1 torchvision==0.29.1 ${GEN3D_TORCH_INDEX:+--index-url "$GEN3D_TORCH_INDEX"}
  echo "setup: installing the engine, bpy and test packages..." >&2
  "${pip[@]}" -r requirements/engine.txt -r requirements/dev.txt
  "${pip[@]}" --no-deps -r requirements/moge.txt
  echo "$want" > "$stamp"
fi
.venv/bin/python -m engine version >/dev/null
echo "setup: .venv ready" >&2
