#!/usr/bin/env bash
# Issue 16's acceptance figures (and issue 14's pool figure) in one run, on an otherwise idle machine:
#   bash benchmarks/run_cpu_acceptance.sh            (about 25 minutes on the 2-core CPU)
# Writes benchmarks/results/*.json; RESULTS.md quotes them. Each step is its own fresh process.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HISTOAUG=${HISTOAUG:-.venv/bin/histoaug}
WORK=${WORK:-${TMPDIR:-/tmp}/histoaug_cpu_acceptance}
mkdir -p "$WORK" benchmarks/results
step() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

step "1. default path (auto) vs diffusers fp32 and onnxruntime fp32"
"$HISTOAUG" bench --backends auto,onnxruntime:fp32 --batch 32,64 --steps 20 --guidance 2 --repeats 5 \
  --json benchmarks/results/synthesis_default_auto.json
step "2. load to first batch, cold then warm compile cache (fresh processes)"
"$PY" benchmarks/compile_cache_probe.py --batch 32 --steps 20 > benchmarks/results/compile_cache_probe.json
step "3. fast mode frontier vs diffusers fp32"
"$PY" benchmarks/fast_mode_frontier.py --batch 32,64 --rounds 3 > benchmarks/results/fast_mode_frontier.json
step "4. label fidelity: exact default path vs fast variants (same seeds, same eval settings)"
PROBE=(--features stain-texture --epochs 10 --min-steps 100 --batch-size 16 --seeds 1 --folds 2 --real-fractions 0.1 --no-progress)
fidelity() {  # NAME, then generate's extra flags
  local name=$1; shift
  "$HISTOAUG" generate --n 2048 --steps 20 "$@" --out "$WORK/$name.h5" --overwrite --quiet
  "$HISTOAUG" eval "$WORK/$name.h5" "${PROBE[@]}" --json "benchmarks/results/fast_mode_fidelity_$name.json"
}
fidelity exact
fidelity deep_cache_2 --fast
fidelity deep_cache_3 --deep-cache 3
fidelity guidance_until_0.5_deep_cache_2 --guidance-until 0.5 --deep-cache 2
step "5. synthesis pool: warm ratio 0.5 vs ratio 0 (issue 14)"
"$PY" benchmarks/generation_and_mixing.py --only mixing --items 4096 --steps 20 --json benchmarks/results/mixing.json
step "done"
