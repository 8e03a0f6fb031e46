#!/usr/bin/env bash
# The few-step frontier of a distilled model (issue 27): the teacher at its own default settings
# (the embedded model: DPM-Solver++ 10 steps, guidance 6, rescale 0.5) against the student at 1, 2, 4 and 8 LCM
# steps (guidance 1), same seeds and labels, measured three ways:
#   - `histoaug eval` against the bundled sample's valid split, with the probe settings of the
#     committed comparison report (docs/reproduce_paper_comparison.sh): Frechet distance and PRDC
#     in stain-texture features, label fidelity, synthetic-only AUC (the mixed arms are left out);
#   - benchmarks/distill_two_sample.py: a probe telling the teacher's patches from each student's
#     (and, as the reference, from the teacher's own patches on other seeds);
#   - patches/s of each generation run (eager torch fp32 here: ratios within one run; the speed
#     table of RESULTS.md comes from benchmarks/distill_speed.py).
# Run from the repository root after `bash scripts/setup.sh dev` and
#   OMP_NUM_THREADS=1 histoaug distill default --out runs/student --data sample \
#       --prompts runs/prompts --steps 2000 --batch-size 32 --lr 1e-4 --checkpoint-every 250 --device cpu
# (runs/prompts: the teacher's prompts dir, rebuilt by the model card's `prompts build` command).
#   STUDENT=DIR   the student (default runs/student; the shipped one: default-fast)   TEACHER=MODEL  (default: default)
#   WORK=DIR      generated files and the report (runs/eval) N=patches per set (1200)
#   QUICK=1       `histoaug eval --quick` instead of the report's probe settings
set -euo pipefail
cd "$(dirname "$0")/.."
HISTOAUG=${HISTOAUG:-.venv/bin/histoaug}
PYTHON=${PYTHON:-.venv/bin/python}
STUDENT=${STUDENT:-runs/student}
TEACHER=${TEACHER:-default}
WORK=${WORK:-runs/eval}
N=${N:-1200}
mkdir -p "$WORK"
RUNTIME=(--backend torch --dtype fp32 --no-compile --quiet --overwrite --n "$N")
"$HISTOAUG" generate --model "$TEACHER" --out "$WORK/teacher.h5" --seed 0 "${RUNTIME[@]}" | tee "$WORK/teacher.log"
"$HISTOAUG" generate --model "$TEACHER" --out "$WORK/teacher_seed1.h5" --seed 1 "${RUNTIME[@]}" \
  | tee "$WORK/teacher_seed1.log"
for steps in 1 2 4 8; do
  "$HISTOAUG" generate --model "$STUDENT" --steps "$steps" --out "$WORK/student_$steps.h5" --seed 0 \
    "${RUNTIME[@]}" | tee "$WORK/student_$steps.log"
done
if [ "${QUICK:-0}" = 1 ]; then
  PROBE=(--quick)
else
  # the report's probe settings; the downstream arms the frontier needs: real and synthetic only
  PROBE=(--test-split valid --features stain-texture --epochs 5 --min-steps 100 --batch-size 16 --seeds 3 \
         --folds 2 --ratios '')
fi
"$HISTOAUG" eval --real sample "${PROBE[@]}" \
  --synthetic "teacher 10 steps=$WORK/teacher.h5" \
  --synthetic "student 1 step=$WORK/student_1.h5" --synthetic "student 2 steps=$WORK/student_2.h5" \
  --synthetic "student 4 steps=$WORK/student_4.h5" --synthetic "student 8 steps=$WORK/student_8.h5" \
  --out "$WORK/report" --overwrite --no-progress "$@"
"$PYTHON" benchmarks/distill_two_sample.py --teacher "$WORK/teacher.h5" --teacher-reference "$WORK/teacher_seed1.h5" \
  --student "student 1 step=$WORK/student_1.h5" --student "student 2 steps=$WORK/student_2.h5" \
  --student "student 4 steps=$WORK/student_4.h5" --student "student 8 steps=$WORK/student_8.h5" \
  > "$WORK/two_sample.json"
