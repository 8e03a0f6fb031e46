"""Validation of a generate() request and the deterministic per-sample prompt choice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from histoaug.errors import InvalidArgumentError
from histoaug.prompts import PromptBank

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SampleRequest:
    """Validated per-sample inputs: label, seed and prompt id of every sample."""

    labels: np.ndarray  # int64 (N,)
    seeds: np.ndarray  # int64 (N,)
    prompt_ids: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.seeds)


def _as_int_array(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InvalidArgumentError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise InvalidArgumentError(f"{name} must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def prompt_for_seed(bank: PromptBank, label: int, seed: int) -> int:
    """The prompt of ``label`` that a sample with ``seed`` uses when none is given (stable per seed)."""
    ids = bank.ids_for_label(label)
    choice = np.random.default_rng([int(seed), 0x50524F4D]).integers(len(ids))
    return ids[int(choice)]


def build_request(bank: PromptBank, labels, seeds, prompt_ids=None) -> SampleRequest:
    labels_a = _as_int_array(labels, "labels")
    seeds_a = _as_int_array(seeds, "seeds")
    if len(labels_a) != len(seeds_a):
        raise InvalidArgumentError(f"{len(labels_a)} labels but {len(seeds_a)} seeds")
    if len(seeds_a) == 0:
        raise InvalidArgumentError("nothing to generate: labels and seeds are empty")
    if np.any((labels_a != 0) & (labels_a != 1)):
        raise InvalidArgumentError(f"labels must be 0 or 1, got {sorted(set(labels_a.tolist()))}")
    if np.any(seeds_a < 0):
        raise InvalidArgumentError(f"seeds must be in 0..{MAX_SEED}")
    if prompt_ids is None:
        ids = np.array([prompt_for_seed(bank, int(lab), int(s)) for lab, s in zip(labels_a, seeds_a, strict=True)],
                       dtype=np.int64)
    else:
        ids = _as_int_array(prompt_ids, "prompt_ids")
        if len(ids) != len(seeds_a):
            raise InvalidArgumentError(f"{len(ids)} prompt ids for {len(seeds_a)} samples")
        for pid, lab in zip(ids.tolist(), labels_a.tolist(), strict=True):
            if bank[pid].label != lab:
                raise InvalidArgumentError(f"prompt {pid} has label {bank[pid].label}, but label {lab} was asked for")
    return SampleRequest(labels=labels_a, seeds=seeds_a, prompt_ids=ids)
