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
# The current embedded model (from adfc74d on) was trained on sample:train, the audit above. The
# previous one (adfc74d^) was trained on the previous bundled sample (128 patches, in git history):
# AUDIT_ALSO_TRAIN=ROOT (a PCam root with train and valid splits) audits the same file against that
# root too, into $WORK/audit_training_data (not committed). For the previous model, run this
# script in a checkout of adfc74d^ with ROOT made by: mkdir -p P && for s in train valid test; do
#   for p in x y; do f=camelyonpatch_level_2_split_${s}_${p}.h5; git show c61e7a9^:histoaug/sample_data/$f > P/$f; done; done
if [ -n "${AUDIT_ALSO_TRAIN:-}" ]; then
  "$HISTOAUG" audit --synthetic "default model=$WORK/default_model.h5" --train "$AUDIT_ALSO_TRAIN:train" \
    --reference "$AUDIT_ALSO_TRAIN:valid" --out "$WORK/audit_training_data" --overwrite "$@"
fi
