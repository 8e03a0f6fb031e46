#!/usr/bin/env bash
# The newest releases: a fresh .venv-newest with everything pyproject.toml allows at its newest
# (the lock ignored), then the linter and the whole suite, as CI runs them. Prints what differs from
# the lock. scripts/lock_dependencies.sh runs this and, when it passes, makes these versions the lock.
#
#   bash scripts/test_newest.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-newest
rm -rf "$VENV"
HISTOAUG_VENV=$VENV bash scripts/setup.sh --newest dev
"$VENV/bin/python" scripts/lock_dependencies.py --out "$VENV/versions.txt"
echo "--- versions that differ from scripts/constraints.txt (< lock, > newest):"
diff <(grep -v '^#' scripts/constraints.txt) <(grep -v '^#' "$VENV/versions.txt") || true
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m pytest "$@"
