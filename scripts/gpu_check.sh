#!/usr/bin/env bash
# One command for a GPU machine: the GPU test suite, then the GPU benchmark, in under 10 minutes.
#
#   bash ../shared/gpu/device-wheels.sh          # here, once: diffusers/albumentations wheels into .whl/
#   bash scripts/gpu_check.sh                    # there (the device tool: carry .whl, OUT set)
#
# Installs the carried wheels and histoaug itself into /tmp/site (offline), runs `pytest -m gpu`
# (and the kernel tests, which include the CUDA variants), then benchmarks/gpu_bench.py with a time
# budget so the whole run ends inside the device tool's 10-minute limit. Everything lands in
# $OUT (default ./gpu-check-out): pytest log and JUnit XML, the benchmark JSON and log, and
# gpu_verified.candidate.json listing the runtimes whose GPU tests passed (to review and copy into
# histoaug/gpu_verified.json). See docs/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
    --target /tmp/site .whl/*.whl . || { echo "gpu_check: installing the carried wheels failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
python3 - <<'PY' 2>&1 | tee "$OUT/environment.txt"
import torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$OUT/environment.txt" 2>&1

# 1. GPU tests (about 3-4 minutes: model loads, a few compiles)
timeout 330 python3 -m pytest -m gpu -q -p no:cacheprovider -rs --junitxml="$OUT/pytest_gpu.xml" \
  tests/test_gpu_runtime.py tests/test_kernels_triton.py tests/test_synthesis_tensorrt.py 2>&1 | tee "$OUT/pytest_gpu.log"
tests_rc=${PIPESTATUS[0]}

# 2. which runtimes passed every GPU test (candidate record for histoaug/gpu_verified.json)
python3 - "$OUT" <<'PY'
import json, sys, datetime, xml.etree.ElementTree as ET
import torch
out = sys.argv[1]
cases = ET.parse(f"{out}/pytest_gpu.xml").getroot().iter("testcase")
runtime_status = {}
for case in cases:
    name = case.get("name", "")
    if "[" not in name or not case.get("classname", "").endswith("test_gpu_runtime"):
        continue
    runtime = name.split("[", 1)[1].rstrip("]")
    failed = case.find("failure") is not None or case.find("error") is not None
    skipped = case.find("skipped") is not None
    state = runtime_status.setdefault(runtime, "passed")
    if failed:
        runtime_status[runtime] = "failed"
    elif skipped and state == "passed":
        runtime_status[runtime] = "skipped"
names = {"torch:fp32": "torch-cuda fp32", "torch:fp16": "torch-cuda fp16", "torch:bf16": "torch-cuda bf16",
         "torch:bf16:True": "torch-cuda bf16 compiled", "onnxruntime": "onnxruntime-cuda", "tensorrt": "tensorrt"}
verified = {names.get(r, r): {"device": torch.cuda.get_device_name(0), "date": datetime.date.today().isoformat(),
                              "torch": torch.__version__, "command": "scripts/gpu_check.sh"}
            for r, s in runtime_status.items() if s == "passed"}
json.dump({"runtime_status": runtime_status, "runtimes": verified}, open(f"{out}/gpu_verified.candidate.json", "w"),
          indent=2)
print("runtime status:", runtime_status)
PY

# 3. the benchmark, with what is left of the 10 minutes (cases not started are recorded as skipped)
left=$(( 560 - ($(date +%s) - start) ))
if [ "$left" -gt 60 ]; then
  timeout "$left" python3 benchmarks/gpu_bench.py --device cuda --budget-s $(( left - 90 )) --repeats 2 \
    --workdir /tmp/histoaug-bench --out "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log" | grep -v "it/s\]"
  bench_rc=${PIPESTATUS[0]}
else
  echo "gpu_check: no time left for the benchmark (tests took $(( $(date +%s) - start )) s)"; bench_rc=124
fi
echo "gpu_check: tests rc=$tests_rc bench rc=$bench_rc total $(( $(date +%s) - start )) s; outputs in $OUT"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
