"""``histoaug.SyntheticSwap``: an albumentations transform that swaps in a synthetic patch.

    transform = A.Compose([histoaug.SyntheticSwap(p=0.5), A.HorizontalFlip()], seed=0)
    out = transform(image=image, label=label)      # the label must be passed

With probability ``p`` the image is replaced by a synthetic patch of the same label; the rest
of the pipeline then augments it like any image. Which patch is drawn from the transform's own
random generator (seeded by ``Compose(seed=...)``) and stored in its params, so
``ReplayCompose`` replays the same patch. The output keeps the input's size and dtype
(uint8, or float in [0, 1]).

A model generates one patch per call here, which is slow on a CPU; for throughput pass a file
written by ``histoaug generate`` (patches are then read, not generated), or use
``SyntheticPCam``, which generates whole batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np

from histoaug.errors import InvalidArgumentError
from histoaug.mixing.sources import FileSource, ModelSource, open_source

_SEED_LIMIT = 2**63 - 1


class SyntheticSwap(A.ImageOnlyTransform):
    """Replace the image, with probability ``p``, by a synthetic patch of its label.

    Args:
        synthesizer: ``"default"``, a model or artifact dir, a ``Synthesizer``, or a generated
            ``.h5`` file.
        p: probability of swapping.
        backend, device, dtype, compile: how the model runs, as for ``load_synthesizer``.
        generate_options: passed to ``generate`` (``steps``, ``guidance``, ...).
    """

    def __init__(
        self,
        synthesizer: Any = "default",
        p: float = 0.5,
        *,
        backend: str = "auto",
        device: str | None = None,
        dtype: str | None = None,
        compile: bool = False,
        generate_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(p=p)
        self.synthesizer = synthesizer
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.compile = compile
        self.generate_options = dict(generate_options or {})
        self._source: FileSource | ModelSource | None = None

    @property
    def source(self) -> FileSource | ModelSource:
        if self._source is None:
            self._source = open_source(
                self.synthesizer, backend=self.backend, device=self.device, dtype=self.dtype,
                compile=self.compile, generate_options=self.generate_options,
                batch_size=1,  # one patch per call: the compile decision and a compiled shape for that
            )
        return self._source

    def __call__(self, *args: Any, force_apply: bool = False, **kwargs: Any) -> dict[str, Any]:
        # check on every call, not only when the swap fires, so a missing label fails at once
        _label_of(kwargs)
        return super().__call__(*args, force_apply=force_apply, **kwargs)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        label = _label_of(data)
        return {
            "swap_label": label,
            "swap_seed": int(self.random_generator.integers(_SEED_LIMIT)),
            "swap_choice": float(self.random_generator.random()),
        }

    def apply(self, img: np.ndarray, swap_label: int = 0, swap_seed: int = 0, swap_choice: float = 0.0,
              **params: Any) -> np.ndarray:
        patch = self._patch(swap_label, swap_seed, swap_choice)
        height, width = img.shape[:2]
        if patch.shape[:2] != (height, width):
            patch = cv2.resize(patch, (width, height), interpolation=cv2.INTER_AREA)
        if img.ndim == 3 and img.shape[2] != 3:
            raise InvalidArgumentError(f"SyntheticSwap needs RGB images, got {img.shape[2]} channels")
        if img.dtype == np.uint8:
            return patch
        if np.issubdtype(img.dtype, np.floating):
            return (patch.astype(np.float32) / 255.0).astype(img.dtype)
        raise InvalidArgumentError(f"SyntheticSwap supports uint8 or float images, got {img.dtype}")

    def _patch(self, label: int, seed: int, choice: float) -> np.ndarray:
        source = self.source
        if isinstance(source, FileSource):
            rows = source.items_by_label[label]
            if rows.size == 0:
                raise InvalidArgumentError(f"{self.synthesizer} has no synthetic patch of label {label}")
            return source.dataset.read_images([int(rows[int(choice * rows.size)])])[0]
        synthesizer = source.synthesizer
        prompt_ids = synthesizer.prompts.ids_for_label(label)
        prompt_id = prompt_ids[int(choice * len(prompt_ids))]
        return synthesizer.generate([label], [seed], [prompt_id], **source.generate_options)[0]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("synthesizer", "backend", "device", "dtype", "compile", "generate_options")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self.synthesizer, str | Path):
            state["_source"] = None  # reopened lazily in the receiving process
        return state


def _label_of(data: dict[str, Any]) -> int:
    label = data.get("label")
    if label is None:
        raise InvalidArgumentError(
            "SyntheticSwap needs the image's label: call the pipeline as transform(image=..., label=0 or 1)"
        )
    label = int(np.asarray(label).reshape(-1)[0])
    if label not in (0, 1):
        raise InvalidArgumentError(f"SyntheticSwap: label must be 0 or 1, got {label}")
    return label
