#!/usr/bin/env bash
# The device check: GPU tests, then the GPU benchmark, inside one short call that brings figures back even
# when it is cut. See docs/gpu.md.
#
#   bash scripts/gpu_wheels.sh                 # here, once: the pinned wheels the GPU image lacks, into .whl/
#   bash scripts/gpu_check.sh                  # there, first call: <= 230 s (--seconds), OUT set by the tool
#   bash scripts/gpu_check.sh --part compiled  # there, optional second call (compiles, <= 300 s), >= 7 min left
#   bash scripts/gpu_check.sh --dry-run        # anywhere: CPU, tiny sizes, the same steps and files (CI runs it)
#   STUDENT=DIR bash scripts/gpu_check.sh      # time another distilled student (DIR carried) than default-fast
#
# Steps, each stopping the run at once when it fails: (1) install the carried wheels and histoaug itself into
# a target folder (a regular build, so histoaug.kernels / histoaug.export are mapped in), (2) import preflight
# (python -P everywhere: the checkout is never on sys.path, so the installed copy is what runs, and the
# preflight proves it), then (3) pytest -m gpu with per-test limits, verbose output streamed to $OUT,
# (4) the benchmark with the time left, its JSON rewritten after every case, (5) the candidate
# gpu_verified.json and a short table, printed last. Files in $OUT (7, under the tool's 8):
# gpu_check.log environment.json pytest_gpu.log pytest_gpu.xml gpu_bench.json gpu_bench.log
# gpu_verified.candidate.json
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mode=device part=first total=230
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) mode=dry ;;
    --part) part=$2; shift ;;
    --seconds) total=$2; shift ;;
    *) echo "gpu_check: unknown argument $1 (--dry-run, --part first|compiled, --seconds N)"; exit 2 ;;
  esac
  shift
done
case "$part" in first|compiled) ;; *) echo "gpu_check: --part is first or compiled"; exit 2 ;; esac
# the second call, only with >= 7 min of device time left: a machine start (1-2 min) plus 5 min of its own
[ "$part" = compiled ] && [ "$total" = 230 ] && total=300
[ "$mode" = dry ] && [ "$total" = 230 ] && total=600  # no device time at stake: room for a loaded 2-core CI
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)
left() { echo $(( total - ($(date +%s) - start) )); }
log() { echo "gpu_check [$(( $(date +%s) - start )) s]: $*" | tee -a "$OUT/gpu_check.log"; }
finish() {  # the candidate record and the short table, last, whatever happened before
  "$PY" -P "$ROOT/scripts/gpu_check_report.py" --out-dir "$OUT" 2>&1 | tee -a "$OUT/gpu_check.log"
  log "done: $1 (total $(( $(date +%s) - start )) s); files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
}
if [ "$mode" = dry ]; then
  device=cpu
  SITE=${SITE:-$(mktemp -d "${TMPDIR:-/tmp}/histoaug-gpu-check.XXXXXX")/site}
else
  device=cuda
  SITE=${SITE:-/tmp/site}
fi
: > "$OUT/gpu_check.log"
log "mode=$mode part=$part device=$device budget=${total} s site=$SITE python=$("$PY" -c 'import sys; print(sys.version.split()[0])')"

# 1. install: the carried wheels (pinned, scripts/gpu_wheels.txt) and histoaug, offline, into $SITE
wheels=() wheel_list=()
if [ -d .whl ]; then
  shopt -s nullglob; wheels=(.whl/*.whl); shopt -u nullglob
  missing=() pinned=()
  while read -r pin; do
    name=${pin%%==*} version=${pin#*==}
    file=$(printf '%s\n' "${wheels[@]}" | grep -i -E "/${name//-/[-_]}-${version}-" | head -1)
    if [ -n "$file" ]; then pinned+=("$file"); else missing+=("$pin"); fi
  done < <(grep -v '^\s*#' scripts/gpu_wheels.txt | grep -v '^\s*$')
  unpinned=$(( ${#wheels[@]} - ${#pinned[@]} ))
  [ "$unpinned" -gt 0 ] && log "ignoring $unpinned wheel(s) in .whl that scripts/gpu_wheels.txt does not pin"
  wheels=("${pinned[@]}")  # only the pinned set: two versions of one package would stop pip
  if [ ${#missing[@]} -gt 0 ]; then
    log "ERROR: .whl lacks ${missing[*]} (bash scripts/gpu_wheels.sh downloads the pinned set)"
    [ "$mode" = dry ] || { finish "stopped at the install"; exit 3; }
  else
    wheel_list=(--wheels scripts/gpu_wheels.txt)  # the preflight checks the installed versions
  fi
  log "installing ${#wheels[@]} carried wheel(s) (${wheels[*]}) and histoaug into $SITE"
elif [ "$mode" = dry ]; then
  log "no .whl folder here (CI): installing histoaug alone into $SITE, its dependencies from this environment; on the GPU machine a missing .whl stops the run"
else
  log "ERROR: no .whl folder: the GPU image has no diffusers (run bash scripts/gpu_wheels.sh here and carry .whl)"
  finish "stopped at the install"; exit 3
fi
# --upgrade: on a machine still warm from an earlier call, pip would otherwise keep the old copy in $SITE;
# build/ (ignored, so kept there between calls) would hand setuptools files deleted since
rm -rf build
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${wheels[@]}" . >> "$OUT/gpu_check.log" 2>&1; then
  tail -5 "$OUT/gpu_check.log"; log "ERROR: pip install failed (above)"; finish "stopped at the install"; exit 3
fi
# PYTHONSAFEPATH=1 is python -P for every process, subprocesses of the tests too (python -m from the root
# would otherwise import the source tree's histoaug, which lacks kernels/ and export/)
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PATH=$SITE/bin:$PATH PYTHONSAFEPATH=1
log "installed"

# 2. import preflight: stops at once, with the error
if ! "$PY" -P scripts/gpu_preflight.py --site "$SITE" --device "$device" "${wheel_list[@]}" \
    --out "$OUT/environment.json" 2>&1 | tee -a "$OUT/gpu_check.log"; then
  finish "stopped at the preflight"; exit 4
fi
[ "$device" = cuda ] && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu \
  --format=csv >> "$OUT/gpu_check.log" 2>&1

# 3. GPU tests: per-test limits, verbose lines streamed to $OUT (a cut run keeps every finished test)
# first call: everything but the AOTInductor-compiled runtime; second call: that runtime (cold compiles)
if [ "$part" = first ]; then selection=(-k "not compile"); per_test=60; test_s=$(( $(left) > 200 ? 100 : $(left) / 2 ))
else selection=(-k "compile"); per_test=180; test_s=$(( $(left) / 2 )); fi
[ "$mode" = dry ] && test_s=240
log "pytest -m gpu ${selection[*]} (limit ${test_s} s, ${per_test} s per test)"
timeout -k 5 "$test_s" "$PY" -P -m pytest -m gpu "${selection[@]}" -v -p no:cacheprovider -rfEs \
  --timeout="$per_test" --timeout-method=signal --junitxml="$OUT/pytest_gpu.xml" \
  tests/test_gpu_runtime.py tests/test_kernels_triton.py tests/test_synthesis_tensorrt.py \
  > "$OUT/pytest_gpu.log" 2>&1
tests_rc=$?
grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" "$OUT/pytest_gpu.log" | tail -4 | tee -a "$OUT/gpu_check.log"
log "tests rc=$tests_rc"
"$PY" -P scripts/gpu_check_report.py --out-dir "$OUT" > /dev/null 2>&1  # candidate now, in case the bench is cut

# 4. the benchmark with what is left (JSON after every case; cases that cannot start are recorded as skipped)
bench_s=$(( $(left) - 12 ))
if [ "$part" = first ]; then parts=embedded,sd15,student,kernels,compile; extra=(); case_s=60
else parts=embedded,compile; extra=(--aot); case_s=150; fi  # the eager rows again: the compiled ratios need them
if [ "$mode" = dry ]; then extra+=(--dry-run); fi
# the student part: the embedded model's student (default-fast), or STUDENT=DIR (a `histoaug distill` output)
[ -n "${STUDENT:-}" ] && extra+=(--student "$STUDENT")
if [ "$bench_s" -gt 20 ]; then
  log "benchmark --parts $parts (limit ${bench_s} s)"
  timeout -k 5 "$bench_s" "$PY" -P benchmarks/gpu_bench.py --device "$device" --parts "$parts" "${extra[@]}" \
    --budget-s $(( bench_s - 8 )) --case-timeout-s $(( bench_s / 3 < case_s ? bench_s / 3 : case_s )) \
    --out "$OUT/gpu_bench.json" > "$OUT/gpu_bench.log" 2>&1
  bench_rc=$?
else
  log "no time left for the benchmark"; bench_rc=124
fi
log "benchmark rc=$bench_rc"

# 5. the candidate record and the table, last
finish "tests rc=$tests_rc bench rc=$bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
