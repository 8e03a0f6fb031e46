#!/usr/bin/env bash
# Rebuilds docs/paper_comparison/: the paper's comparison in miniature on the bundled sample.
# Columns per report: the real reference (real vs real), the label-only twin and the morphology
# model (the embedded default model), both at the default model's settings (10 DPM-Solver++ steps,
# guidance 6, guidance rescale 0.5: its sampler_defaults.json; the twin carries the same file),
# measured by `histoaug eval` twice:
#   docs/paper_comparison/test/   against the test split (3 normal + 2 tumour images held out whole:
#                                 other tissues than the training images)
#   docs/paper_comparison/valid/  against the valid split (held-out bands of 3 training images)
#
#   bash docs/reproduce_paper_comparison.sh [LABEL_ONLY_MODEL_DIR]     (default: runs/label_only)
#
# The label-only twin is not shipped in the package: rebuild it with the commands in
# histoaug/default_model/MODEL_CARD.md ("Label-only twin"), or pass its dir. MODEL (default:
# "default", the embedded model) names the morphology model. SPLITS (default "test valid") picks
# the reports (two processes with SPLITS=test / SPLITS=valid and their own WORK use both cores).
# Optional columns (the report committed in adfc74d, before the guidance rescale, had all three):
#   NO_RESCALE=1   the morphology model at guidance rescale 0 (plain guidance 6)
#   G2=1           the morphology model at guidance 2, rescale 0 (the product default for other models)
#   PREVIOUS=DIR   another model at its own defaults (that report: the default model shipped before
#                  issue 23, `git show 6c1b692:histoaug/default_model` restores it)
#
# Reduced to fit a 2-core CPU (defaults in brackets): 1200 synthetic patches per set (the size
# of the real train split) [any]; probes 5 epochs (375 steps), at least 100 steps, batch 16 [15, 300, 32];
# 2 two-sample folds [4]; 3 downstream seeds [3]; real fraction 0.1. Features: stain-texture
# (no Inception-v3 or DINO weights can be loaded offline here; pass --features inception
# --inception-weights PATH or a local DINOv2 dir where you have them). Everything is seeded:
# a rerun on the same models gives the same numbers (up to CPU floating-point differences).
set -euo pipefail
cd "$(dirname "$0")/.."
HISTOAUG=${HISTOAUG:-.venv/bin/histoaug}
MODEL=${MODEL:-default}
LABEL_ONLY=${1:-runs/label_only}
WORK=${WORK:-${TMPDIR:-/tmp}/histoaug_paper_comparison}
N=${N:-1200}
mkdir -p "$WORK"
[ -d "$LABEL_ONLY" ] || { echo "label-only twin not found: $LABEL_ONLY (see the model card)" >&2; exit 2; }
"$HISTOAUG" generate --model "$MODEL" --n "$N" --out "$WORK/morphology.h5" --seed 0 --overwrite --quiet
"$HISTOAUG" generate --model "$LABEL_ONLY" --n "$N" --out "$WORK/label_only.h5" --seed 0 --overwrite --quiet
extra=()
if [ "${NO_RESCALE:-0}" = 1 ]; then
  "$HISTOAUG" generate --model "$MODEL" --n "$N" --out "$WORK/morphology_no_rescale.h5" --seed 0 \
    --guidance-rescale 0 --overwrite --quiet
  extra+=(--synthetic "morphology, no rescale=$WORK/morphology_no_rescale.h5")
fi
if [ "${G2:-0}" = 1 ]; then
  "$HISTOAUG" generate --model "$MODEL" --n "$N" --out "$WORK/morphology_g2.h5" --seed 0 --guidance 2 \
    --guidance-rescale 0 --overwrite --quiet
  extra+=(--synthetic "morphology, guidance 2=$WORK/morphology_g2.h5")
fi
previous=()
if [ -n "${PREVIOUS:-}" ]; then  # optional column: another model (the issue-23 report had the previous default model)
  "$HISTOAUG" generate --model "$PREVIOUS" --n "$N" --out "$WORK/previous.h5" --seed 0 --overwrite --quiet
  previous=(--synthetic "previous default model=$WORK/previous.h5")
fi
for split in ${SPLITS:-test valid}; do
  "$HISTOAUG" eval "${previous[@]}" \
    --synthetic "label-only twin=$WORK/label_only.h5" \
    --synthetic "morphology (default model)=$WORK/morphology.h5" \
    "${extra[@]}" \
    --real sample --test-split "$split" --features stain-texture \
    --epochs 5 --min-steps 100 --batch-size 16 --seeds 3 --folds 2 --real-fractions 0.1 \
    --out "docs/paper_comparison/$split" --overwrite --no-progress
done
