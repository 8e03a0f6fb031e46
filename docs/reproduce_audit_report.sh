#!/usr/bin/env bash
# Rebuilds docs/audit_report/: histoaug audit of the embedded default model against the bundled
# sample (does any of 1000 generated patches copy a training patch?). One command, run from
# anywhere after `bash scripts/setup.sh dev`; rerun it when the default model changes, then copy
# the verdict table into docs/audit.md and histoaug/default_model/MODEL_CARD.md. Seeded: a rerun on
# the same model gives the same numbers (up to CPU floating-point differences).
#
# Reference: the sample's valid split (patches of the training slides that share no pixel with
# them: the hardest look-alikes). Features: stain-texture (no Inception-v3 or DINO weights can be
# loaded offline here; pass --features inception --inception-weights PATH or a DINOv2 dir where
# you have them). Extra arguments go to `histoaug audit` (e.g. --fail-above 0).
set -euo pipefail
cd "$(dirname "$0")/.."
HISTOAUG=${HISTOAUG:-.venv/bin/histoaug}
WORK=${WORK:-${TMPDIR:-/tmp}/histoaug_audit_report}
mkdir -p "$WORK"
"$HISTOAUG" generate --n 1000 --out "$WORK/default_model.h5" --seed 0 --overwrite --quiet
"$HISTOAUG" audit --synthetic "default model=$WORK/default_model.h5" --train sample:train --reference sample:valid \
  --out docs/audit_report --overwrite "$@"
