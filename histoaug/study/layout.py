"""The study folder: the one place that names its files and says which of them readers may see.

```
STUDY/
  manifest.json      every input (files, sha256, split, seed, n, display size); not for readers
  key.json           the answer key (source, file, row and label of every patch); never served
  answers/           the server's stored answers, one JSON answer file per reader
  reader/            the only part readers get (served, or zipped and opened from disk):
    index.html reader.js reader.css   the reader's page (copied from the package)
    study.js         the public study: id, patch ids in display order, display size
    patches/ID.png   one patch each, opaque random names, nearest-neighbour upscaled
```
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histoaug.errors import StudyError

MANIFEST = "manifest.json"
KEY = "key.json"
ANSWERS_DIR = "answers"
READER_DIR = "reader"
PATCHES_DIR = "patches"
STUDY_JS = "study.js"
PAGE_FILES = ("index.html", "reader.js", "reader.css")
STUDY_FORMAT = "histoaug-study/1"
ANSWERS_FORMAT = "histoaug-study-answers/1"
STUDY_JS_PREFIX = "window.HISTOAUG_STUDY = "
PATCH_ID = re.compile(r"^[0-9a-f]{16}$")

SOURCES = ("real", "synthetic")
LABELS = ("healthy", "tumour")  # PCam label 0, 1
CONFIDENCES = (1, 2, 3)  # 1 guess, 2 fairly sure, 3 sure


def static_dir() -> Path:
    """The package folder holding the reader's page."""
    return Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class KeyEntry:
    """What a patch really is (from key.json)."""

    patch: str
    source: str  # "real" or "synthetic"
    set_name: str  # "real" or the synthetic set's name
    file: str
    row: int
    label: int  # 0 healthy, 1 tumour


@dataclass(frozen=True)
class Study:
    """A built study folder: its public description and its key."""

    root: Path
    study_id: str
    order: tuple[str, ...]
    key: dict[str, KeyEntry]
    manifest: dict[str, Any]

    @property
    def answers_dir(self) -> Path:
        return self.root / ANSWERS_DIR

    @property
    def reader_dir(self) -> Path:
        return self.root / READER_DIR

    def patch_path(self, patch: str) -> Path:
        return self.reader_dir / PATCHES_DIR / f"{patch}.png"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"{path.parent}: not a study folder (no {path.name}; build one with `histoaug study "
                         "build`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path}: unreadable {what} ({exc})") from None


def read_public_study(reader_dir: Path) -> dict[str, Any]:
    """The public study description of ``reader/study.js`` (what the page and the server know)."""
    path = reader_dir / STUDY_JS
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(f"{reader_dir}: no readable {STUDY_JS} ({exc.strerror})") from None
    if not text.startswith(STUDY_JS_PREFIX):
        raise StudyError(f"{path}: not a histoaug study file")
    try:
        public = json.loads(text[len(STUDY_JS_PREFIX):].rstrip().rstrip(";"))
    except json.JSONDecodeError as exc:
        raise StudyError(f"{path}: corrupt ({exc})") from None
    return public


def render_public_study(public: dict[str, Any]) -> str:
    """``study.js``: a script, not a JSON file, so that the page also loads it from file:// (no fetch there)."""
    # json.dumps escapes nothing HTML-special by default; "<" as \u003c keeps "</script>" out of any inlining
    body = json.dumps(public, indent=1, sort_keys=True).replace("<", "\\u003c")
    return f"{STUDY_JS_PREFIX}{body};\n"


def load_study(root: str | Path) -> Study:
    """Read a study folder built by ``histoaug study build`` (manifest, key, public order)."""
    root = Path(root)
    if not root.is_dir():
        raise StudyError(f"{root}: no such study folder")
    manifest = _read_json(root / MANIFEST, "manifest")
    raw_key = _read_json(root / KEY, "answer key")
    if manifest.get("format") != STUDY_FORMAT or raw_key.get("study_id") != manifest.get("study_id"):
        raise StudyError(f"{root}: manifest and key do not belong to one {STUDY_FORMAT} study")
    public = read_public_study(root / READER_DIR)
    if public.get("study_id") != manifest["study_id"]:
        raise StudyError(f"{root}: reader/{STUDY_JS} belongs to another study")
    key = {entry["patch"]: KeyEntry(**entry) for entry in raw_key["patches"]}
    order = tuple(public["patches"])
    if set(order) != set(key):
        raise StudyError(f"{root}: reader/{STUDY_JS} and {KEY} list different patches")
    return Study(root, manifest["study_id"], order, key, manifest)
