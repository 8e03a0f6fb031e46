"""Artifact manifests: file hashes written at export and verified on every load.

A manifest lists every file of an artifact with its size and sha256; a missing, truncated or
modified file is refused with :class:`ArtifactError` before anything is deserialised.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from histoaug.errors import ArtifactError

MANIFEST_FILE = "manifest.json"
ARTIFACT_FORMAT = "histoaug.artifact/1"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files under ``root`` (sorted), the manifest excluded."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name != MANIFEST_FILE)


def directory_digest(root: Path, parts: tuple[str, ...] | None = None) -> str:
    """One sha256 over (path, file sha256) of the files under ``root`` (only those whose first
    path component is in ``parts``, when given): the identity of a model directory."""
    digest = hashlib.sha256()
    for rel in list_files(root):
        if parts is not None and rel.split("/", 1)[0] not in parts:
            continue
        digest.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return digest.hexdigest()


def write_manifest(root: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under ``root`` and write ``manifest.json`` with ``fields``."""
    files = {rel: {"bytes": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)}
             for rel in list_files(root)}
    manifest = {"format": ARTIFACT_FORMAT, **fields, "files": files}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{root}: not a histoaug artifact (no {MANIFEST_FILE})") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: not a {ARTIFACT_FORMAT} manifest")
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise ArtifactError(f"{path}: manifest lists no files")
    return manifest


def verify_manifest(root: Path) -> dict[str, Any]:
    """Read the manifest and check every listed file's size and sha256; return the manifest."""
    manifest = read_manifest(root)
    for rel, entry in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            raise ArtifactError(f"{root}: file {rel} listed in the manifest is missing")
        try:
            size, expected = int(entry["bytes"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{root}: malformed manifest entry for {rel}") from exc
        actual_size = path.stat().st_size
        if actual_size != size:
            raise ArtifactError(f"{root}: file {rel} is {actual_size} bytes, the manifest says {size} "
                                f"(truncated or replaced)")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{root}: file {rel} does not match its sha256 in the manifest (modified)")
    return manifest
