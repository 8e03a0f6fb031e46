#!/usr/bin/env bash
# Upgrade the lock, deliberately: install the newest releases and run the whole suite on them
# (scripts/test_newest.sh); only if it passes, scripts/constraints.txt becomes those versions.
# Commit the new lock with what changed (git diff scripts/constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test_newest.sh "$@"
cp .venv-newest/versions.txt scripts/constraints.txt
echo "scripts/constraints.txt updated; review with: git diff scripts/constraints.txt"
