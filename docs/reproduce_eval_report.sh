#!/usr/bin/env bash
# Rebuilds docs/eval_report/: histoaug eval's report of the embedded default model against the
# bundled sample. Run from anywhere after `bash scripts/setup.sh dev`; 6 minutes on an idle
# 2-core CPU (measured 2026-11-24, generation included). Everything is seeded, so a rerun on
# the same model gives the same numbers (up to CPU floating-point differences).
#
# The two columns come from ONE model (the embedded one has no label-only twin): all of its
# trained prompts (label x 3 morphology types per label) vs one prompt per label (its most
# populated morphology type: ids 2 and 5). This stands in for the paper's label-prompt vs
# morphology-prompt comparison; it is not the same experiment.
#
# Reduced to fit the time budget (defaults in brackets): probes 100 steps at batch 16 [300 at
# 32], 2 two-sample folds [4], 3 seeds, 1000 patches per set; features: stain-texture, because
# no Inception-v3 or DINO weights can be loaded offline here (pass --features inception
# --inception-weights PATH, or a DINOv2 dir, where you have them).
set -euo pipefail
cd "$(dirname "$0")/.."
HISTOAUG=${HISTOAUG:-.venv/bin/histoaug}
WORK=${WORK:-${TMPDIR:-/tmp}/histoaug_eval_report}
mkdir -p "$WORK"
"$HISTOAUG" generate --n 1000 --out "$WORK/all_prompts.h5" --seed 0 --overwrite --quiet
"$HISTOAUG" generate --n 1000 --out "$WORK/prompts_2_5.h5" --prompts 2,5 --seed 0 --overwrite --quiet
"$HISTOAUG" eval \
  --synthetic "all trained prompts=$WORK/all_prompts.h5" \
  --synthetic "one prompt per label=$WORK/prompts_2_5.h5" \
  --real sample --features stain-texture \
  --epochs 10 --min-steps 100 --batch-size 16 --seeds 3 --folds 2 --real-fractions 0.1 \
  --out docs/eval_report --overwrite "$@"
