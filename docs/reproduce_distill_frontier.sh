#!/usr/bin/env bash
# The few-step frontier of a distilled embedded model (issue 27): the teacher at its default
# (DPM-Solver++ 10 steps, guidance 2) against the student at 1, 2, 4 and 8 LCM steps (guidance 1),
# same seeds, measured with `histoaug eval --quick` against the bundled sample, and patches/s of
# each generation run. Run from the repository root after `bash scripts/setup.sh dev` and
#   OMP_NUM_THREADS=1 histoaug distill default --out runs/student --data sample --steps 400 \
#       --batch-size 32 --lr 1e-4 --guidance 2 --checkpoint-every 100 --device cpu
# Speeds here are eager torch fp32 on a shared CPU: read them as ratios within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
HISTOAUG=${HISTOAUG:-.venv/bin/histoaug}
STUDENT=${STUDENT:-runs/student}
WORK=${WORK:-runs/eval}
N=${N:-1000}
mkdir -p "$WORK"
RUNTIME=(--backend torch --dtype fp32 --no-compile --quiet --overwrite --seed 0 --n "$N")
[ -f "$WORK/teacher.h5" ] || "$HISTOAUG" generate --out "$WORK/teacher.h5" "${RUNTIME[@]}" | tee "$WORK/teacher.log"
for steps in 1 2 4 8; do
  "$HISTOAUG" generate --model "$STUDENT" --steps "$steps" --out "$WORK/student_$steps.h5" "${RUNTIME[@]}" \
    | tee "$WORK/student_$steps.log"
done
"$HISTOAUG" eval --quick --real sample \
  --synthetic "teacher 10 steps=$WORK/teacher.h5" \
  --synthetic "student 1 step=$WORK/student_1.h5" --synthetic "student 2 steps=$WORK/student_2.h5" \
  --synthetic "student 4 steps=$WORK/student_4.h5" --synthetic "student 8 steps=$WORK/student_8.h5" \
  --out "$WORK/report" --overwrite "$@"
