"""Perceptual quality of a cloaked photo against the clean one, at full resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity


@dataclass(frozen=True)
class Quality:
    ssim: float
    psnr: float


def psnr(clean: np.ndarray, cloaked: np.ndarray) -> float:
    mse = float(np.mean((clean.astype(np.float64) - cloaked.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def measure_quality(clean: np.ndarray, cloaked: np.ndarray) -> Quality:
    """SSIM (Gaussian-weighted, per channel, averaged) and PSNR of two RGB uint8 photos."""
    ssim = structural_similarity(clean, cloaked, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return Quality(ssim=float(ssim), psnr=psnr(clean, cloaked))
