"""Where synthetic patches for ``SyntheticPCam`` come from: a generated file or a live model."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from histoaug.data.pcam import PCam
from histoaug.errors import InvalidArgumentError
from histoaug.mixing.epoch_plan import EpochPlan
from histoaug.seeding import SampleAssigner

logger = logging.getLogger(__name__)


class SyntheticSource(Protocol):
    """Returns the synthetic patches of the given slots of an epoch plan."""

    def fetch(self, plan: EpochPlan, slots: np.ndarray) -> np.ndarray: ...


class FileSource:
    """Patches from a file written by ``histoaug generate`` (no model runs at all).

    The ``r``-th slot of label ``l`` in epoch ``e`` takes the file's item of label ``l`` number
    ``(r + e * slots_of_label_l) mod items_of_label_l``: no repeats within an epoch while the
    file has enough items of that label, and later epochs move on through the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.dataset = PCam(path)
        labels = self.dataset.labels
        self.items_by_label = {label: np.flatnonzero(labels == label) for label in (0, 1)}

    def check_labels(self, needed: set[int]) -> None:
        for label in needed:
            if self.items_by_label[label].size == 0:
                raise InvalidArgumentError(
                    f"{self.dataset.files.images} has no synthetic patch of label {label}"
                )

    def fetch(self, plan: EpochPlan, slots: np.ndarray) -> np.ndarray:
        labels = plan.slot_labels[slots]
        rows = np.empty(slots.size, dtype=np.int64)
        for label in (0, 1):
            chosen = labels == label
            if not chosen.any():
                continue
            items = self.items_by_label[label]
            per_epoch = int((plan.slot_labels == label).sum())
            rows[chosen] = items[(plan.slot_rank[slots[chosen]] + plan.epoch * per_epoch) % items.size]
        return self.dataset.read_images(rows)


class ModelSource:
    """Patches generated on demand by a ``Synthesizer``, one batched call per fetch.

    The model is loaded lazily in each process that fetches (DataLoader workers included), from
    ``spec`` ("default" or a path) unless a ready ``Synthesizer`` object was given.
    """

    def __init__(self, spec: Any, *, backend: str = "auto", device: str | None = None,
                 generate_options: dict[str, Any] | None = None, dtype: str | None = None,
                 compile: bool | None = None, expected_patches: int | None = None,
                 batch_size: int | None = None, graphs: bool | None = None) -> None:
        self.spec = spec
        self.graphs = graphs  # CUDA graphs (torch on CUDA); None: auto decides
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.compile = compile
        self.expected_patches = expected_patches
        self.batch_size = batch_size  # the block size of its calls, if fixed (SyntheticSwap: 1)
        self.generate_options = dict(generate_options or {})
        self._synthesizer = None if isinstance(spec, str | Path) else spec

    @property
    def synthesizer(self) -> Any:
        refuse_cuda_in_bad_fork(self.device if self._synthesizer is None else str(self._synthesizer.device))
        if self._synthesizer is None:
            from histoaug.synthesis.synthesizer import load_synthesizer


            self._synthesizer = load_synthesizer(str(self.spec), backend=self.backend, device=self.device,
                                                 dtype=self.dtype, compile=self.compile,
                                                 expected_patches=self.expected_patches, graphs=self.graphs,
                                                 **({"batch_size": self.batch_size} if self.batch_size else {}))
        return self._synthesizer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self.spec, str | Path):
            state["_synthesizer"] = None  # each worker loads its own copy
        return state

    def reloadable(self) -> ModelSource:
        """A source another process can load by itself: a given ``Synthesizer`` object (whose
        runtime may hold unpicklable sessions) is replaced by its model dir, backend, device,
        dtype and compile setting."""
        if isinstance(self.spec, str | Path):
            return self
        synthesizer = self.spec
        return ModelSource(str(synthesizer.model.root), backend=synthesizer.backend,
                           device=str(synthesizer.device), generate_options=self.generate_options,
                           dtype=synthesizer.dtype if synthesizer.backend == "torch" else None,
                           compile=synthesizer.compiled, graphs=synthesizer.graphs or None)

    def producer_model(self) -> dict[str, Any]:
        """How the pool's producer program loads this model (JSON-ready). With no device given,
        each process uses its own rank's GPU (``cuda:LOCAL_RANK``) when CUDA is available."""
        source = self.reloadable()
        return {"source": str(source.spec), "backend": source.backend, "device": source.device or default_device(),
                "dtype": source.dtype, "compile": source.compile, "expected_patches": source.expected_patches,
                "graphs": source.graphs}

    def fetch(self, plan: EpochPlan, slots: np.ndarray) -> np.ndarray:
        synthesizer = self.synthesizer
        assignment = SampleAssigner(synthesizer.prompts, run_seed=plan.epoch_seed).assign(
            slots, labels=plan.slot_labels[slots]
        )
        return synthesizer.generate(
            assignment.labels, assignment.seeds, assignment.prompt_ids,
            batch_size=len(slots), **self.generate_options,
        )


def refuse_cuda_in_bad_fork(device: str | None) -> None:
    """A forked DataLoader worker cannot use CUDA once the training process initialised it
    ("Cannot re-initialize CUDA in forked subprocess"): say so in one line, with the ways out,
    instead of failing deep inside torch or silently running on another device."""
    import torch

    wants_cuda = str(device).startswith("cuda") if device is not None else torch.cuda.is_available()
    if wants_cuda and getattr(torch.cuda, "_is_in_bad_fork", lambda: False)():
        raise InvalidArgumentError(
            "this DataLoader worker was forked after CUDA was initialised, so it cannot run the model on the "
            "GPU; use SyntheticPCam's pool (pool=True, the default), a file written by histoaug generate, "
            "device='cpu', or DataLoader(multiprocessing_context='spawn')")


def default_device() -> str | None:
    """``cuda:LOCAL_RANK`` when CUDA is available (so every DDP rank uses its own GPU), else None.
    ``torch.cuda.is_available`` asks the driver without initialising CUDA in this process."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return None


def open_source(spec: Any, **model_options: Any) -> FileSource | ModelSource:
    """A ``.h5`` file -> FileSource; "default", a model/artifact dir or a Synthesizer -> ModelSource."""
    if isinstance(spec, str | Path) and Path(spec).suffix in (".h5", ".hdf5") and Path(spec).is_file():
        return FileSource(spec)
    return ModelSource(spec, **model_options)
