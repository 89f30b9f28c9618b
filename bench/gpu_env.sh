# Sourced by every bench/gpu_*.sh: the carried wheels (bench/wheels.txt, .whl/) installed into
# /tmp/site once per machine, and one engine cache for every script of a call, so gsplat's CUDA is
# built once.  Installing again would rewrite gsplat's sources, and their new times make its JIT
# build run again (~75 s) in the next process that imports it.  Bytecode is compiled at install, as a
# user's pip install does: without it a cold run spent 4.9 s (all threads) compiling diffusers & co (2026-12-03 profile).
if compgen -G ".whl/*.whl" > /dev/null && [ ! -f /tmp/site/.gen3d-installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.gen3d-installed || exit 1
fi
export PYTHONPATH=/tmp/site MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
export GEN3D_CACHE=${GEN3D_CACHE:-/tmp/gen3d-cache}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$GEN3D_CACHE/torch_extensions}  # also for tests with their own cache
# $OUT/device.txt: the card, its driver and the date (UTC) of a call's results.  (Not a commit: the
# device machine's copy of the tree does not carry this checkout's HEAD.)
record_device() {
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
  date -u +%Y-%m-%dT%H:%MZ >> "$OUT/device.txt"
}
