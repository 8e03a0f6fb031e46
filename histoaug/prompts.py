"""Prompts a model was trained on: ``PromptBank`` and its ``prompts.json`` file.

The runtime and the training module share this format. A prompt has an integer ``id`` (its
row in the stored prompt embeddings), the ``label`` it stands for (0 healthy, 1 tumour), an
optional ``morphology`` type (the K-means cluster of the paper's morphology-enriched prompts;
``None`` for the label-only baseline) and the ``text`` given to the text encoder.

File format (``prompts.json``)::

    {"format": "histoaug.prompts/1",
     "kind": "morphology" | "baseline" | "custom",
     "template": "...",                # how texts were made (informational)
     "prompts": [{"id": 0, "label": 0, "morphology": 3, "text": "...", "patches": 12}, ...]}

``patches`` (optional) is how many training patches had the prompt. A prompt with 0 patches
was never trained (a label x morphology pair that does not occur), so it is never chosen when
a sample's prompt is picked for its label; it can still be asked for by id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from histoaug.atomic_files import write_text
from histoaug.errors import ArtifactError, InvalidArgumentError, OutputExistsError

PROMPTS_FORMAT = "histoaug.prompts/1"
PROMPTS_FILE = "prompts.json"


class PromptsFileError(ArtifactError):
    """A prompts.json file is missing fields, malformed, or inconsistent."""


@dataclass(frozen=True)
class Prompt:
    id: int
    label: int
    morphology: int | None
    text: str
    patches: int | None = None  # training patches with this prompt; None = unknown


class PromptBank:
    """An ordered, validated set of prompts with ids ``0..n-1``."""

    def __init__(
        self, prompts: Iterable[Prompt], *, kind: str = "custom", template: str = ""
    ) -> None:
        self.prompts: tuple[Prompt, ...] = tuple(sorted(prompts, key=lambda p: p.id))
        self.kind = kind
        self.template = template
        if not self.prompts:
            raise InvalidArgumentError("a prompt bank needs at least one prompt")
        ids = [p.id for p in self.prompts]
        if ids != list(range(len(ids))):
            raise InvalidArgumentError(f"prompt ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        for prompt in self.prompts:
            if prompt.label not in (0, 1):
                raise InvalidArgumentError(f"prompt {prompt.id}: label must be 0 or 1, got {prompt.label}")
            if not prompt.text.strip():
                raise InvalidArgumentError(f"prompt {prompt.id}: empty text")

    def __len__(self) -> int:
        return len(self.prompts)

    def __repr__(self) -> str:
        per_label = [sum(p.label == label for p in self.prompts) for label in (0, 1)]
        return (f"PromptBank(kind={self.kind!r}, prompts={len(self.prompts)}, label 0: {per_label[0]}, "
                f"label 1: {per_label[1]})")

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    def __getitem__(self, prompt_id: int) -> Prompt:
        if not 0 <= prompt_id < len(self.prompts):
            raise InvalidArgumentError(
                f"unknown prompt id {prompt_id}; this model has ids 0..{len(self.prompts) - 1}"
            )
        return self.prompts[prompt_id]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    def ids_for_label(self, label: int) -> list[int]:
        """Ids of the prompts of ``label`` that were trained (in id order): the ones a sample of
        that label may use when no prompt is given. Prompts with 0 training patches are left out."""
        ids = [p.id for p in self.prompts if p.label == label and p.patches != 0]
        if not ids:
            raise InvalidArgumentError(f"this model has no trained prompt for label {label}")
        return ids

    def with_patch_counts(self, counts: Iterable[int]) -> PromptBank:
        """The same bank with ``patches`` set from ``counts[id]``."""
        counts = [int(c) for c in counts]
        if len(counts) != len(self.prompts):
            raise InvalidArgumentError(f"{len(counts)} patch counts for {len(self.prompts)} prompts")
        prompts = [Prompt(p.id, p.label, p.morphology, p.text, c) for p, c in zip(self.prompts, counts, strict=True)]
        return PromptBank(prompts, kind=self.kind, template=self.template)

    # --- files -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROMPTS_FORMAT,
            "kind": self.kind,
            "template": self.template,
            "prompts": [asdict(p) for p in self.prompts],
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``prompts.json`` atomically (``path`` may be the file or its directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / PROMPTS_FILE
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "prompts") -> PromptBank:
        if not isinstance(data, dict) or data.get("format") != PROMPTS_FORMAT:
            raise PromptsFileError(f"{source}: not a {PROMPTS_FORMAT} file")
        try:
            prompts = [
                Prompt(
                    id=int(item["id"]),
                    label=int(item["label"]),
                    morphology=None if item.get("morphology") is None else int(item["morphology"]),
                    text=str(item["text"]),
                    patches=None if item.get("patches") is None else int(item["patches"]),
                )
                for item in data["prompts"]
            ]
            return cls(prompts, kind=str(data.get("kind", "custom")), template=str(data.get("template", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise PromptsFileError(f"{source}: malformed prompt entry ({exc})") from exc

    @classmethod
    def load(cls, path: str | Path) -> PromptBank:
        """Read ``prompts.json`` (``path`` may be the file or its directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / PROMPTS_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise PromptsFileError(f"{path}: prompts file not found") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise PromptsFileError(f"{path}: cannot read prompts ({exc})") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def baseline(cls) -> PromptBank:
        """The paper's label-only prompts: 'healthy' and 'cancerous' lymph-node tissue."""
        template = "a histopathology image of {condition} lymph node tissue"
        return cls(
            [
                Prompt(0, 0, None, template.format(condition="healthy")),
                Prompt(1, 1, None, template.format(condition="cancerous")),
            ],
            kind="baseline",
            template=template,
        )
