#!/usr/bin/env bash
# Download the wheels in bench/wheels.txt for the device tool's GPU machine (CPython 3.12, x86-64
# manylinux) into .whl/.  Run from anywhere; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -vE '^\s*(#|$)' bench/wheels.txt | while read -r spec; do
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
done
ls -l .whl
