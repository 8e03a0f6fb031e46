#!/usr/bin/env bash
# Create .venv and install histoaug into it (editable), with the extras named as arguments.
#
#   bash scripts/setup.sh            # runtime only
#   bash scripts/setup.sh dev        # + test/lint/benchmark tools and the training extras
#   bash scripts/setup.sh --newest dev   # the newest releases instead of the locked versions
#
# Versions: every package is installed at the version recorded in scripts/constraints.txt, the
# known-good set CI runs on (an upstream release between two commits cannot turn CI red).
# pyproject.toml keeps open lower bounds for users who `pip install histoaug`; --newest takes the
# newest releases they allow (scripts/test_newest.sh; scripts/lock_dependencies.sh upgrades the lock).
#
# torch: if the venv has none, `torch==$HISTOAUG_TORCH_VERSION` (default 2.13.0) is installed
# first. On a CPU machine of this workplace pip takes the local CPU wheel; on a CUDA machine
# the same pin resolves to PyPI's CUDA build. To use another build (e.g. a CUDA index), set
# HISTOAUG_TORCH_SPEC, e.g. HISTOAUG_TORCH_SPEC="torch --index-url https://.../cu126".
# torch is not in the lock (its build is the machine's business); a CUDA torch also keeps the
# triton it came with. HISTOAUG_VENV names another venv folder (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${HISTOAUG_VENV:-.venv}
LOCK=scripts/constraints.txt
newest=0
if [ "${1:-}" = "--newest" ]; then newest=1; shift; fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  read -r -a torch_spec <<< "${HISTOAUG_TORCH_SPEC:-torch==${HISTOAUG_TORCH_VERSION:-2.13.0}}"
  "${PIP[@]}" install "${torch_spec[@]}"
fi
constraints=()
if [ "$newest" = 0 ]; then
  lock="$LOCK"
  if "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.version.cuda is None)"; then
    lock="$VENV/constraints-for-cuda-torch.txt"   # a CUDA torch pins its own triton
    grep -v '^triton==' "$LOCK" > "$lock"
  fi
  constraints=(-c "$lock")
fi
extras=$(IFS=,; echo "$*")
"${PIP[@]}" install "${constraints[@]}" -e ".${extras:+[$extras]}"
"$VENV/bin/histoaug" --version
