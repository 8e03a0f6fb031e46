"""Pixel-level agreement of uint8 images: PSNR, the one definition benchmarks, training reports and tests use."""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0  # uint8 images


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on the uint8 scale (inf for a zero error)."""
    return float("inf") if mse == 0 else 10 * math.log10(PEAK**2 / mse)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 image arrays of one shape (inf when identical)."""
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))
