"""The end of scripts/gpu_check.sh: what the GPU tests and the benchmark brought back, as a candidate
``gpu_verified.json`` and a short table (printed last, so the device tool's output tail holds it).

Reads the verbose pytest log line by line (``nodeid PASSED``), so a run cut by a time-out still counts every
test that finished (JUnit XML is written only at the end); reads the benchmark JSON, which is rewritten after
every case. Standard library only: it must run even when the install or the preflight failed.

    python3 -P scripts/gpu_check_report.py --out-dir OUT [--device-name NAME]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from collections import Counter
from pathlib import Path

LINE = re.compile(r"^(?P<node>tests/\S+::\S+?)\s+(?P<outcome>PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")
RUNTIME_TESTS = "tests/test_gpu_runtime.py::"
# how a test id names a runtime, and what the bench calls it: BACKEND[:DTYPE][:graphs|:compile]


def parse_log(path: Path) -> dict[str, str]:
    """nodeid -> outcome, from ``pytest -v`` output (the last outcome of a node wins: setup/teardown errors)."""
    outcomes: dict[str, str] = {}
    if not path.exists():
        return outcomes
    for line in path.read_text(errors="replace").splitlines():
        match = LINE.match(line.strip())
        if match:
            node, outcome = match["node"], match["outcome"]
            if outcomes.get(node) not in ("FAILED", "ERROR"):
                outcomes[node] = outcome
    return outcomes


def runtime_status(outcomes: dict[str, str]) -> dict[str, str]:
    """runtime id -> passed | failed | skipped, over the parametrised tests of tests/test_gpu_runtime.py."""
    status: dict[str, str] = {}
    for node, outcome in outcomes.items():
        if not node.startswith(RUNTIME_TESTS) or "[" not in node:
            continue
        runtime = node.split("[", 1)[1].rstrip("]")
        state = status.setdefault(runtime, "skipped")
        if outcome in ("FAILED", "ERROR"):
            status[runtime] = "failed"
        elif outcome == "PASSED" and state == "skipped":
            status[runtime] = "passed"
    return status


def spec_fields(runtime: str) -> dict[str, object]:
    parts = runtime.split(":")
    dtype = parts[1] if len(parts) > 1 and parts[1] not in ("graphs", "compile") else None
    return {"backend": parts[0], "dtype": dtype, "compile": "compile" in parts[1:], "graphs": "graphs" in parts[1:]}


def bench_speed(bench: dict, runtime: str) -> tuple[float | None, str | None]:
    """The embedded model's patches/s of ``runtime`` at the largest batch the benchmark finished."""
    rows = [c for c in bench.get("cases", []) if c.get("workload") == "embedded" and c.get("status") == "ok"
            and c.get("runtime") == f"histoaug {runtime}"]
    if not rows:
        return None, None
    best = max(rows, key=lambda c: c["batch"])
    return best["patches_per_second"], f"embedded model, batch {best['batch']}, {bench.get('steps')} steps"


def candidates(status: dict[str, str], bench: dict, device_name: str | None, torch_version: str | None) -> dict:
    runtimes = {}
    for runtime, state in status.items():
        if state != "passed":
            continue
        speed, where = bench_speed(bench, runtime)
        runtimes[f"{runtime} ({device_name})"] = {
            **spec_fields(runtime), "device": device_name, "date": datetime.date.today().isoformat(),
            "torch": torch_version, "command": "scripts/gpu_check.sh", "patches_per_second": speed, "measured": where}
    return {"about": "candidate entries for histoaug/gpu_verified.json: review, then copy the runtimes table",
            "runtime_status": status, "runtimes": runtimes}


def table(bench: dict) -> str:
    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"{'workload':<15} {'runtime':<50} {'batch':>5} {'patch/s':>9} {'median s':>9} {'x eager':>7} "
             f"{'x comp':>6} {'=eager':>6} {'UNet TF/s':>9}"]
    for c in bench.get("cases", []):
        if c.get("status") != "ok":
            lines.append(f"{c['workload']:<15} {c['runtime']:<50} {c['batch']:>5}  {c['status']}: {c.get('reason')}")
            continue
        same = "-" if c.get("identical_to_eager") is None else ("yes" if c["identical_to_eager"] else "NO")
        lines.append(f"{c['workload']:<15} {c['runtime']:<50} {c['batch']:>5} {fmt(c['patches_per_second'], '9.1f')} "
                     f"{fmt(c['seconds_median'], '9.4f')} {fmt(c['speedup_vs_diffusers_eager'], '7.2f')} "
                     f"{fmt(c['speedup_vs_diffusers_compiled'], '6.2f')} {same:>6} {fmt(c['unet_tflops'], '9.2f')}"
                     + (f"  {c['extra']['speedup_vs_teacher']:.2f}x teacher"
                        if "speedup_vs_teacher" in (c.get("extra") or {}) else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args()
    out = args.out_dir
    outcomes = parse_log(out / "pytest_gpu.log")
    bench = json.loads((out / "gpu_bench.json").read_text()) if (out / "gpu_bench.json").exists() else {}
    env = json.loads((out / "environment.json").read_text()) if (out / "environment.json").exists() else {}
    device_name = (env.get("gpu") or {}).get("name") or bench.get("device_name")
    torch_version = (env.get("versions") or {}).get("torch") or bench.get("torch")
    status = runtime_status(outcomes)
    record = candidates(status, bench, device_name, torch_version)
    record["tests"] = outcomes
    (out / "gpu_verified.candidate.json").write_text(json.dumps(record, indent=2) + "\n")
    counts = Counter(outcomes.values())
    print(f"tests: {dict(counts) or 'none finished'}; runtimes: {status or 'none'}")
    for node, outcome in outcomes.items():
        if outcome in ("FAILED", "ERROR"):
            print(f"  {outcome}: {node}")
    if bench:
        done = Counter(c.get("status") for c in bench.get("cases", []))
        print(f"benchmark on {bench.get('device_name')}: {dict(done)} in {bench.get('seconds_total')} s")
        print(table(bench))
    else:
        print("benchmark: no JSON (it did not start)")


if __name__ == "__main__":
    main()
