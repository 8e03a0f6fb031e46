"""Test helpers for histoaug.study: small studies from the bundled sample, answer files, a server process."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from evaluation_data import real_split, write_synthetic_file

from histoaug import sample_root
from histoaug.study.build import BuildConfig, StudySource, build_study
from histoaug.study.layout import LABELS, Study, load_study


def write_synthetic_set(path: Path, per_label: int = 10) -> Path:
    """A synthetic-format file: real valid-split patches with their colour channels reversed (visibly different)."""
    x, y = real_split("valid")
    keep = np.concatenate([np.flatnonzero(y == label)[:per_label] for label in (0, 1)])
    return write_synthetic_file(path, np.ascontiguousarray(x[keep][..., ::-1]), y[keep])


def make_study(folder: Path, n: int = 8, seed: int = 0, display_size: int = 96, sets: int = 1) -> Study:
    sources = [StudySource(f"synth{k}", write_synthetic_set(folder / f"synth{k}.h5")) for k in range(sets)]
    build_study(BuildConfig(real_root=sample_root(), real_split="test", real_name="sample", n=n, seed=seed,
                            display_size=display_size), sources, folder / "study")
    return load_study(folder / "study")


def answer(patch: str, source: str, label: str, confidence: int | None = None) -> dict:
    return {"patch": patch, "source": source, "label": label, "confidence": confidence,
            "time": "2026-12-04T19:00:00.000Z"}


def oracle_answers(study: Study) -> list[dict]:
    return [answer(p, study.key[p].source, LABELS[study.key[p].label], 3) for p in study.order]


def answer_file(study: Study, reader: str, answers: list[dict], study_id: str | None = None) -> dict:
    return {"format": "histoaug-study-answers/1", "study_id": study_id or study.study_id, "reader": reader,
            "mode": "static", "answers": answers}


def write_answer_file(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


class ServerProcess:
    """``histoaug study serve`` as its own process (python -m), as users run it."""

    def __init__(self, study_root: Path, port: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "histoaug.cli.main", "study", "serve", str(study_root), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if ready else ""
        if "serving study" not in line:
            self.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.process.stderr.read()!r}")
        self.url = line.split(" at ")[1].split(" ")[0]
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()

    def post(self, payload: dict | bytes, content_type: str = "application/json", headers: dict | None = None
             ) -> tuple[int, dict]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + "api/answers", data=data, method="POST",
                                         headers={"Content-Type": content_type, **(headers or {})})
        return _open(request)

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def _open(request: urllib.request.Request) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_for(condition, timeout_s: float = 45, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
