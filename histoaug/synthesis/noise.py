"""Initial latents: each sample's noise comes from its own seed (determinism contract, docs/architecture.md).

A shared generator stream would make a sample depend on its position in the batch; one
``torch.Generator`` per sample, on the CPU, makes it a function of the seed alone, on any device.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def initial_noise(seeds: Iterable[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Standard-normal latents (N, *shape), float32 on the CPU, row i from ``seeds[i]``."""
    rows = []
    for seed in seeds:
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        rows.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    return torch.stack(rows)
