#!/usr/bin/env bash
# Download the pinned wheels of scripts/gpu_wheels.txt into .whl/ (ignored by .gitignore), to carry
# to the GPU machine with the working tree (the device tool: carry [".whl"]). Python 3.12 wheels, x86-64.
#
#   bash scripts/gpu_wheels.sh          # from anywhere in the checkout; prints what .whl holds
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
mapfile -t pins < <(grep -v '^\s*#' scripts/gpu_wheels.txt | grep -v '^\s*$')
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${pins[@]}"
ls -l .whl
du -sh .whl
