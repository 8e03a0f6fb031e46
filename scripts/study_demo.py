"""The reader study's whole flow on the bundled sample and the embedded model, timed; and its screenshots.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/study_demo.py --work /tmp/study-demo            # the timing
    OMP_NUM_THREADS=1 .venv/bin/python scripts/study_demo.py --work /tmp/study-demo --screenshots docs/study

Steps, each a `histoaug` command in its own process (CPU time = user + sys of that process):
1. `histoaug generate --n 100 --out s.h5` (the embedded model);
2. `histoaug study build --real sample --synthetic s.h5 --n 100 --seed 0 --out study`;
3. `histoaug study serve study --port 0` and four scripted readers answering all 100 patches through its
   HTTP API (as the page does: one POST per answer, each stored durably before the reply); the readers
   are seeded: each tells real from synthetic right with probability 0.50-0.65 and labels right with
   probability 0.70-0.85;
4. `histoaug study score study --out report`.
With --screenshots DIR: a headless chromium (Debian's, a 1366x768 window) shows the reader's page (start,
a patch, the final screen) as DIR/reader_*.png, and the report is copied to DIR/report/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HISTOAUG = [sys.executable, "-m", "histoaug.cli.main"]
READERS = (("Reader A", 0.62, 0.85), ("Reader B", 0.55, 0.80), ("Reader C", 0.50, 0.75), ("Reader D", 0.65, 0.70))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_step(name: str, command: list[str], cwd: Path, timings: list) -> None:
    cpu, wall = _children_cpu(), time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True)
    timings.append((name, time.perf_counter() - wall, _children_cpu() - cpu))


def scripted_readers(study: Path, url: str) -> None:
    key = json.loads((study / "key.json").read_text())
    study_id = key["study_id"]
    labels = ("healthy", "tumour")
    for index, (name, source_skill, label_skill) in enumerate(READERS):
        rng = np.random.default_rng(index)
        for entry in key["patches"]:
            truth_source = entry["source"]
            source = truth_source if rng.random() < source_skill else ({"real": "synthetic", "synthetic": "real"}
                                                                        [truth_source])
            label = labels[entry["label"]] if rng.random() < label_skill else labels[1 - entry["label"]]
            body = json.dumps({"study_id": study_id, "reader": name, "answer": {
                "patch": entry["patch"], "source": source, "label": label, "confidence": int(rng.integers(1, 4)),
                "time": "2026-12-04T19:00:00.000Z"}}).encode()
            request = urllib.request.Request(url + "api/answers", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200


def serve_and_answer(work: Path, timings: list) -> None:
    cpu_children, cpu_self, wall = _children_cpu(), _self_cpu(), time.perf_counter()
    server = subprocess.Popen([*HISTOAUG, "study", "serve", "study", "--port", "0"], cwd=work,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split(" at ")[1].split(" ")[0]
        scripted_readers(work / "study", url)
    finally:
        server.terminate()
        server.wait()
    cpu = _children_cpu() - cpu_children + _self_cpu() - cpu_self
    timings.append((f"serve + {len(READERS)} scripted readers x 100 answers (HTTP API)", time.perf_counter() - wall,
                    cpu))


def screenshots(work: Path, out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains

    server = subprocess.Popen([*HISTOAUG, "study", "serve", "study", "--port", "0"], cwd=work,
                              stdout=subprocess.PIPE, text=True)
    profile = tempfile.mkdtemp(prefix="histoaug-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1366,768", "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        url = server.stdout.readline().split(" at ")[1].split(" ")[0]
        driver.get(url)
        time.sleep(0.5)
        driver.find_element("id", "name").send_keys("Dr. Example")
        driver.save_screenshot(str(out / "reader_start.png"))
        driver.find_element("id", "start-button").click()
        time.sleep(0.5)
        for _ in range(11):
            ActionChains(driver).send_keys("rh\ue007").perform()
            time.sleep(0.15)
        ActionChains(driver).send_keys("st2").perform()
        time.sleep(0.5)
        driver.save_screenshot(str(out / "reader_patch.png"))
        ActionChains(driver).send_keys("\ue007").perform()
        for _ in range(100 - 12):
            ActionChains(driver).send_keys("rh\ue007").perform()
        time.sleep(1.0)
        driver.save_screenshot(str(out / "reader_done.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.terminate()
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="empty or new folder for s.h5, study/, report/")
    parser.add_argument("--screenshots", type=Path, help="also take the page's screenshots and copy the figures here")
    args = parser.parse_args()
    work = args.work.resolve()
    if work.exists() and any(work.iterdir()):
        parser.error(f"{work} is not empty")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    timings: list[tuple[str, float, float]] = []
    run_step("histoaug generate --n 100 --out s.h5", [*HISTOAUG, "generate", "--n", "100", "--out", "s.h5"], work,
             timings)
    run_step("histoaug study build --real sample --synthetic s.h5 --n 100 --seed 0 --out study",
             [*HISTOAUG, "study", "build", "--real", "sample", "--synthetic", "s.h5", "--n", "100", "--seed", "0",
              "--out", "study"], work, timings)
    serve_and_answer(work, timings)
    run_step("histoaug study score study --out report", [*HISTOAUG, "study", "score", "study", "--out", "report"],
             work, timings)
    print("\n| step | wall s | CPU s |\n| --- | ---: | ---: |")
    for name, wall, cpu in timings:
        print(f"| `{name}` | {wall:.1f} | {cpu:.1f} |")
    print(f"| **total** | {sum(t[1] for t in timings):.1f} | {sum(t[2] for t in timings):.1f} |")
    if args.screenshots is not None:
        args.screenshots.mkdir(parents=True, exist_ok=True)
        screenshots(work, args.screenshots.resolve())
        shutil.rmtree(args.screenshots / "report", ignore_errors=True)
        shutil.copytree(work / "report", args.screenshots / "report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
