#!/usr/bin/env bash
# Create .venv and install histoaug into it (editable), with the extras named as arguments.
#
#   bash scripts/setup.sh            # runtime only
#   bash scripts/setup.sh dev        # + test/lint/benchmark tools and the training extras
#
# torch: if the venv has none, `torch==$HISTOAUG_TORCH_VERSION` (default 2.13.0) is installed
# first. On a CPU machine of this workplace pip takes the local CPU wheel; on a CUDA machine
# the same pin resolves to PyPI's CUDA build. To use another build (e.g. a CUDA index), set
# HISTOAUG_TORCH_SPEC, e.g. HISTOAUG_TORCH_SPEC="torch --index-url https://.../cu126".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  read -r -a torch_spec <<< "${HISTOAUG_TORCH_SPEC:-torch==${HISTOAUG_TORCH_VERSION:-2.13.0}}"
  "${PIP[@]}" install "${torch_spec[@]}"
fi
extras=$(IFS=,; echo "$*")
"${PIP[@]}" install -e ".${extras:+[$extras]}"
.venv/bin/histoaug --version
