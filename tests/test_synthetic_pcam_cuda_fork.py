"""Model work in a DataLoader worker forked after the trainer initialised CUDA is refused in one
line (torch would fail with "Cannot re-initialize CUDA in forked subprocess"); the state torch
reports for such a worker is simulated here, as this machine has no GPU."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from pcam_files import random_patches, write_release_split
from synthesis_models import tiny_model_dir

from histoaug import InvalidArgumentError, SyntheticPCam
from histoaug.mixing.synthetic_swap import SyntheticSwap


@pytest.fixture()
def forked_after_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)


def test_on_demand_generation_in_a_bad_fork_is_refused(tmp_path, tmp_path_factory, forked_after_cuda):
    images, labels = random_patches(4, seed=0)
    write_release_split(tmp_path / "real", "train", images, labels)
    dataset = SyntheticPCam(tmp_path / "real", ratio=1.0, synthesizer=str(tiny_model_dir(tmp_path_factory)),
                            backend="torch", pool=False)
    with pytest.raises(InvalidArgumentError, match=r"forked after CUDA was initialised.*pool=True"):
        dataset[0]


def test_synthetic_swap_in_a_bad_fork_is_refused(tmp_path_factory, forked_after_cuda):
    swap = A.Compose([SyntheticSwap(str(tiny_model_dir(tmp_path_factory)), p=1.0, backend="torch")], seed=0)
    with pytest.raises(InvalidArgumentError, match="forked after CUDA was initialised"):
        swap(image=np.zeros((96, 96, 3), np.uint8), label=1)
