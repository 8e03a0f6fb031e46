"""Initial latents: each sample's noise comes from its own seed (determinism contract, docs/architecture.md).

A shared generator stream would make a sample depend on its position in the batch; one
``torch.Generator`` per sample, on the CPU, makes it a function of the seed alone, on any device.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

STEP_NOISE_STREAM = 1  # the noise a stochastic sampler (LCM) injects between steps


def initial_noise(seeds: Iterable[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Standard-normal latents (N, *shape), float32 on the CPU, row i from ``seeds[i]``."""
    rows = []
    for seed in seeds:
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        rows.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    return torch.stack(rows)


def step_noise_generators(seeds: Iterable[int]) -> list[torch.Generator]:
    """One CPU generator per sample for the noise a stochastic sampler (LCM) adds between steps.

    Seeded from (seed, stream), apart from the initial noise, so a student's sample stays a
    function of its own seed, not of its batch or position.
    """
    generators = []
    for seed in seeds:
        state = np.random.SeedSequence([int(seed), STEP_NOISE_STREAM]).generate_state(2, np.uint32)
        generators.append(torch.Generator(device="cpu").manual_seed((int(state[0]) << 31) ^ int(state[1])))
    return generators
