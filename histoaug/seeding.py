"""Per-sample seeding, shared by generation and mixing: what sample ``i`` is (label, prompt, noise seed).

Everything here is a pure function of (run seed, i) and the options, never of a random stream
consumed in order, so any block of indices can be computed on its own: by a resumed run, by one
Ray worker, or by a dataset item in a DataLoader worker, and all agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from histoaug.errors import InvalidArgumentError
from histoaug.prompts import PromptBank

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_SEED_BITS = np.uint64(0x7FFFFFFFFFFFFFFF)  # torch.Generator.manual_seed takes < 2**63 safely


def splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed 64-bit hash (Steele et al., 2014)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def index_hash(run_seed: int, indices: np.ndarray, stream: int) -> np.ndarray:
    """Independent 64-bit hashes of (run_seed, stream, i) for each index."""
    with np.errstate(over="ignore"):
        run = np.asarray([run_seed], dtype=np.uint64) * np.uint64(0x100000001B3)
        key = splitmix64(run + np.uint64(stream))
        return splitmix64(key ^ splitmix64(np.asarray(indices, dtype=np.uint64)))


def parse_label_spec(spec: str | float, *, name: str = "--labels", keywords: tuple[str, ...] = ()) -> float | str:
    """The label mix a user asks for (``generate --labels``, ``SyntheticPCam(synthetic_labels=)``).

    ``balanced`` -> 0.5; ``0`` / ``1`` -> all of one label; a number in [0, 1] -> the fraction
    of label 1. A word in ``keywords`` (e.g. ``match``: follow the real data) is returned as is.
    ``name`` is what the error message calls the setting.
    """
    if spec in keywords:
        return spec
    if spec == "balanced":
        return 0.5
    try:
        fraction = float(spec)
    except (TypeError, ValueError):
        words = ", ".join(f"'{word}'" for word in (*keywords, "balanced"))
        raise InvalidArgumentError(
            f"{name} must be {words}, 0, 1 or a fraction of label 1 in [0, 1], not {spec!r}"
        ) from None
    if not 0.0 <= fraction <= 1.0:  # also refuses NaN
        raise InvalidArgumentError(f"{name} fraction must lie in [0, 1], got {spec}")
    return fraction


def labels_for(indices: np.ndarray, fraction_tumour: float) -> np.ndarray:
    """Label of each index, spread evenly: any prefix 0..i holds round(i * fraction) tumours."""
    indices = np.asarray(indices, dtype=np.float64)
    return (np.floor((indices + 1) * fraction_tumour) - np.floor(indices * fraction_tumour)).astype(np.uint8)


@dataclass(frozen=True)
class Assignment:
    """Per-sample (label, prompt id, seed) arrays for a block of indices."""

    indices: np.ndarray
    labels: np.ndarray
    prompt_ids: np.ndarray
    seeds: np.ndarray


class SampleAssigner:
    """Maps sample indices to (label, prompt, seed) for one run's seed and options."""

    def __init__(
        self,
        prompts: PromptBank,
        *,
        run_seed: int,
        fraction_tumour: float = 0.5,
        prompt_ids: Sequence[int] | None = None,
    ) -> None:
        self.run_seed = int(run_seed)
        self.fraction_tumour = float(fraction_tumour)
        # default: every trained prompt (see PromptBank.ids_for_label); explicit ids are used as given
        allowed = ([p.id for p in prompts if p.patches != 0] if prompt_ids is None
                   else [int(p) for p in prompt_ids])
        for prompt_id in allowed:
            prompts[prompt_id]  # raises InvalidArgumentError naming the unknown id
        self._by_label = {
            label: np.asarray([p for p in allowed if prompts[p].label == label], dtype=np.int64)
            for label in (0, 1)
        }
        needed = {0} if fraction_tumour == 0 else {1} if fraction_tumour == 1 else {0, 1}
        for label in needed:
            if self._by_label[label].size == 0:
                raise InvalidArgumentError(
                    f"no selected prompt has label {label}, but the label mix asks for it"
                )

    def assign(self, indices: np.ndarray, labels: np.ndarray | None = None) -> Assignment:
        """Assignments of ``indices``; ``labels`` overrides the label mix (e.g. to match real data)."""
        indices = np.asarray(indices, dtype=np.int64)
        if labels is None:
            labels = labels_for(indices, self.fraction_tumour)
        else:
            labels = np.asarray(labels, dtype=np.uint8).reshape(-1)
            missing = set(np.unique(labels).tolist()) - {k for k, v in self._by_label.items() if v.size}
            if missing:
                raise InvalidArgumentError(f"no selected prompt has label {sorted(missing)[0]}")
        choice = index_hash(self.run_seed, indices, stream=1)
        prompt_ids = np.empty(indices.size, dtype=np.int64)
        for label, candidates in self._by_label.items():
            mask = labels == label
            if mask.any():
                prompt_ids[mask] = candidates[(choice[mask] % np.uint64(candidates.size)).astype(np.int64)]
        seeds = (index_hash(self.run_seed, indices, stream=2) & _SEED_BITS).astype(np.int64)
        return Assignment(indices=indices, labels=labels, prompt_ids=prompt_ids, seeds=seeds)
