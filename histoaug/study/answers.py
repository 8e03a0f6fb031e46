"""Answer files: one JSON format for the page's export (static mode) and the server's stored answers.

```
{"format": "histoaug-study-answers/1", "study_id": "...", "reader": "Dr A", "mode": "served" | "static",
 "answers": [{"patch": "0123456789abcdef", "source": "real" | "synthetic", "label": "healthy" | "tumour",
              "confidence": 1 | 2 | 3 | null, "time": "2026-12-04T19:00:00.000Z"}, ...]}
```

A later answer to the same patch replaces the earlier one (a reader who went back and changed their
mind). The server keeps one such file per reader in ``STUDY/answers/`` and rewrites it atomically and
durably (fsync'd) on every answer, so a closed tab, a reload or a killed server loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histoaug.atomic_files import write_text
from histoaug.errors import StudyError
from histoaug.study import layout

MAX_NAME_CHARS = 80
MAX_TIME_CHARS = 40
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    patch: str
    source: str
    label: str
    confidence: int | None
    time: str

    def to_dict(self) -> dict[str, Any]:
        return {"patch": self.patch, "source": self.source, "label": self.label, "confidence": self.confidence,
                "time": self.time}


@dataclass(frozen=True)
class AnswerFile:
    """One reader's answers to one study (latest answer per patch, in the order first given)."""

    study_id: str
    reader: str
    answers: dict[str, Answer]
    path: Path | None = None
    mode: str = "static"


def clean_reader_name(name: Any) -> str:
    """A reader name as stored: stripped, NFC, 1-80 printable characters (it is shown in pages and reports)."""
    if not isinstance(name, str):
        raise StudyError("the reader name must be a string")
    name = unicodedata.normalize("NFC", name).strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise StudyError(f"the reader name must have 1 to {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise StudyError("the reader name must not contain control characters")
    return name


def reader_key(name: str) -> str:
    """Readers are the same reader when their names match ignoring case and surrounding space."""
    return clean_reader_name(name).casefold()


def parse_answer(raw: Any, valid_patches: set[str] | frozenset[str], where: str) -> Answer:
    """Validate one answer record (from a file or a request)."""
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: an answer must be an object")
    patch = raw.get("patch")
    if not isinstance(patch, str) or not layout.PATCH_ID.match(patch):
        raise StudyError(f"{where}: {str(patch)[:40]!r} is not a patch id")
    if patch not in valid_patches:
        raise StudyError(f"{where}: patch {patch} does not exist in this study")
    source, label, confidence = raw.get("source"), raw.get("label"), raw.get("confidence")
    if source not in layout.SOURCES:
        raise StudyError(f"{where}: patch {patch}: source must be one of {', '.join(layout.SOURCES)}")
    if label not in layout.LABELS:
        raise StudyError(f"{where}: patch {patch}: label must be one of {', '.join(layout.LABELS)}")
    if confidence is not None and (isinstance(confidence, bool) or confidence not in layout.CONFIDENCES):
        raise StudyError(f"{where}: patch {patch}: confidence must be 1, 2, 3 or null")
    time = raw.get("time", "")
    if not isinstance(time, str) or len(time) > MAX_TIME_CHARS or not re.fullmatch(r"[0-9TZ:.+\- ]*", time):
        raise StudyError(f"{where}: patch {patch}: time must be an ISO 8601 timestamp")
    return Answer(patch, source, label, confidence, time)


def parse_answer_file(data: Any, study: layout.Study, where: str, path: Path | None = None) -> AnswerFile:
    """Validate a whole answer file against ``study``."""
    if not isinstance(data, dict) or data.get("format") != layout.ANSWERS_FORMAT:
        raise StudyError(f"{where}: not a histoaug study answer file (format {layout.ANSWERS_FORMAT})")
    if data.get("study_id") != study.study_id:
        raise StudyError(f"{where}: answers from another study ({str(data.get('study_id'))[:40]!r}, this study is "
                         f"{study.study_id})")
    try:
        reader = clean_reader_name(data.get("reader"))
    except StudyError as exc:
        raise StudyError(f"{where}: {exc}") from None
    records = data.get("answers")
    if not isinstance(records, list):
        raise StudyError(f"{where}: 'answers' must be a list")
    valid = frozenset(study.key)
    answers: dict[str, Answer] = {}
    for record in records:
        answer = parse_answer(record, valid, where)
        answers[answer.patch] = answer
    mode = data.get("mode") if data.get("mode") in ("served", "static") else "static"
    return AnswerFile(study.study_id, reader, answers, path, mode)


def read_answer_file(path: Path, study: layout.Study) -> AnswerFile:
    """Read and validate one answer file (exported from the page or stored by the server)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise StudyError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB, not an answer file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"{path}: no such answer file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path}: unreadable answer file ({exc})") from None
    return parse_answer_file(data, study, str(path), path)


def answer_file_json(study_id: str, reader: str, answers: dict[str, Answer], mode: str) -> str:
    return json.dumps({"format": layout.ANSWERS_FORMAT, "study_id": study_id, "reader": reader, "mode": mode,
                       "answers": [answer.to_dict() for answer in answers.values()]}, indent=1) + "\n"


def stored_answer_path(study: layout.Study, reader: str) -> Path:
    """``answers/<letters of the name>-<hash of the name>.json``: safe on every filesystem, one per reader."""
    key = reader_key(reader)
    slug = "".join(char if char.isascii() and char.isalnum() else "_" for char in key)[:32].strip("_") or "reader"
    return study.answers_dir / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.json"


def stored_answer_files(study: layout.Study) -> list[Path]:
    return sorted(study.answers_dir.glob("*.json")) if study.answers_dir.is_dir() else []


class AnswerStore:
    """The server's answers: one file per reader, rewritten atomically and fsync'd on every answer."""

    def __init__(self, study: layout.Study) -> None:
        self.study = study
        self._lock = threading.Lock()
        self._readers: dict[str, AnswerFile] = {}
        self._valid = frozenset(study.key)
        study.answers_dir.mkdir(exist_ok=True)
        for path in stored_answer_files(study):
            stored = read_answer_file(path, study)
            self._readers[reader_key(stored.reader)] = stored

    def answers_of(self, reader: str) -> AnswerFile:
        name = clean_reader_name(reader)
        with self._lock:
            return self._readers.get(reader_key(name)) or AnswerFile(self.study.study_id, name, {}, None, "served")

    def record(self, reader: str, raw_answer: Any) -> int:
        """Store one answer durably before returning; the number of patches this reader has answered."""
        name = clean_reader_name(reader)
        answer = parse_answer(raw_answer, self._valid, "answer")
        with self._lock:
            current = self._readers.get(reader_key(name))
            answers = dict(current.answers) if current else {}
            answers.pop(answer.patch, None)  # re-answered patches move to the end: the log order is the order given
            answers[answer.patch] = answer
            stored_name = current.reader if current else name
            path = stored_answer_path(self.study, stored_name)
            write_text(path, answer_file_json(self.study.study_id, stored_name, answers, "served"), durable=True)
            self._readers[reader_key(name)] = AnswerFile(self.study.study_id, stored_name, answers, path, "served")
            return len(answers)
