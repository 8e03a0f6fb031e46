"""Training batches whose content is a function of (seed, step) only, so a resumed run is exact.

Every training sample has a global position ``g`` (micro-batch ``k``, process ``rank`` of
``world``, slot ``j``: ``g = (k * world + rank) * batch + j``). Its dataset index comes from a
per-epoch permutation seeded by ``(seed, epoch)``; its flip / 90-degree rotation, VAE sample,
diffusion noise, timestep and conditioning dropout come from generators seeded by
``(seed, stream, g)``. Nothing is drawn from a shared RNG stream, so stopping at step ``s`` and
resuming reproduces exactly the batches an uninterrupted run would have seen, and the
DataLoader's worker count does not change them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

from histoaug.data.pcam import PCam

# Seed-sequence streams: independent random numbers for each purpose.
PERMUTATION_STREAM = 1
AUGMENT_STREAM = 2
NOISE_STREAM = 3
DISTILL_STREAM = 4  # consistency distillation: VAE sample, noise, skip-step index
PROMPT_STREAM = 5  # distillation without a prompts dir: each patch's prompt among its label's


def sample_generator(seed: int, stream: int, position: int) -> torch.Generator:
    """A CPU torch generator for one sample, seeded by (seed, stream, position)."""
    hi, lo = np.random.SeedSequence([seed, stream, position]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(hi) << 31) ^ int(lo))


@dataclass(frozen=True)
class BatchPlan:
    """Which samples process ``rank`` of ``world`` trains on in each micro-batch."""

    n: int
    batch_size: int
    seed: int
    world: int = 1
    rank: int = 0

    def positions(self, micro_step: int) -> np.ndarray:
        start = (micro_step * self.world + self.rank) * self.batch_size
        return np.arange(start, start + self.batch_size, dtype=np.int64)

    def indices(self, positions: np.ndarray) -> np.ndarray:
        epochs, offsets = np.divmod(positions, self.n)
        picked = [_permutation(self.n, self.seed, int(e))[o] for e, o in zip(epochs, offsets, strict=True)]
        return np.array(picked, dtype=np.int64)


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, PERMUTATION_STREAM, epoch]).permutation(n)


def augment(image: np.ndarray, seed: int, position: int) -> np.ndarray:
    """Random horizontal flip and 90-degree rotation (the dihedral group: H&E has no orientation)."""
    rng = np.random.default_rng([seed, AUGMENT_STREAM, position])
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = np.rot90(image, turns, axes=(0, 1))
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class StepBatches(Dataset):
    """Map-style dataset whose item ``k`` is micro-batch ``k`` (use with ``batch_size=None``).

    Items are dicts: ``images`` uint8 (B, H, W, 3), ``prompt_ids`` int64 (B,), ``positions``
    int64 (B,) (the global sample positions, which seed the noise).
    """

    def __init__(self, dataset: PCam, prompt_ids: np.ndarray, plan: BatchPlan, *, augment_images: bool = True) -> None:
        self.dataset = dataset
        self.prompt_ids = np.asarray(prompt_ids, dtype=np.int64)
        self.plan = plan
        self.augment_images = augment_images

    def __len__(self) -> int:  # unbounded in principle; the sampler picks the micro-steps
        return 2**62

    def __getitem__(self, micro_step: int) -> dict[str, torch.Tensor]:
        positions = self.plan.positions(int(micro_step))
        indices = self.plan.indices(positions)
        images = self.dataset.read_images(indices)
        if self.augment_images:
            images = np.stack([augment(img, self.plan.seed, int(p)) for img, p in zip(images, positions, strict=True)])
        return {
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "prompt_ids": torch.from_numpy(self.prompt_ids[indices]),
            "positions": torch.from_numpy(positions),
        }


def sample_noise(
    positions: torch.Tensor, seed: int, latent_shape: tuple[int, ...], num_timesteps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample VAE-sampling noise, diffusion noise, timestep and dropout draw (CPU tensors)."""
    vae_eps, noise, steps, drops = [], [], [], []
    for position in positions.tolist():
        generator = sample_generator(seed, NOISE_STREAM, position)
        vae_eps.append(torch.randn(latent_shape, generator=generator))
        noise.append(torch.randn(latent_shape, generator=generator))
        steps.append(torch.randint(0, num_timesteps, (1,), generator=generator))
        drops.append(torch.rand(1, generator=generator))
    return torch.stack(vae_eps), torch.stack(noise), torch.cat(steps), torch.cat(drops)
