"""Reconstruction quality of clips: PSNR and SSIM, per clip.

Both take pixels in [-1, 1] (``data_range`` 2, what the VAE codes) as [B, C, T, H, W] and return
[B]. SSIM is Wang et al. (2004) per frame and channel: an 11-tap Gaussian window (sigma 1.5),
K1 = 0.01, K2 = 0.03, population (co)variances, averaged over the pixels the window fits in
entirely (no padding); this is ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
use_sample_covariance=False, data_range=2)`` averaged over channels and frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """10 log10(range^2 / MSE) per clip: [B, ...] -> [B] (inf where x == y)."""
    mse = (x.double() - y.double()).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-offsets.square() / (2 * sigma ** 2))
    return taps / taps.sum()  # [size]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per clip: x, y [B, C, T, H, W] (H, W >= window) -> [B]."""
    batch, channels = x.shape[:2]
    # every frame and channel is one single-channel image: [B*C*T, 1, H, W]
    fold = lambda v: rearrange(v.double(), "b c t h w -> (b c t) 1 h w")  # noqa: E731
    x, y = fold(x), fold(y)
    taps = _gaussian_window(window, sigma).to(x.device)
    rows, cols = taps.view(1, 1, window, 1), taps.view(1, 1, 1, window)

    def blur(v: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region only
        return F.conv2d(F.conv2d(v, rows), cols)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    per_image = index.flatten(1).mean(dim=1)  # [B*C*T]
    return per_image.view(batch, -1).mean(dim=1)
