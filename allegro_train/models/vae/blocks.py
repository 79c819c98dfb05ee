"""The 2D layers of the VideoVAE: Stable Diffusion 1.x's VAE blocks, run on every frame alone.

Each takes frames folded into the batch, ``[B*T, C, H, W]``, so its weights are exactly an image
VAE's (that is what makes inflation from an image VAE possible). Module and parameter names are
diffusers' (``norm1``, ``conv_shortcut``, ``to_out.0``, ...), so state dicts match key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# diffusers builds every 2D GroupNorm of the VAE with this eps (the temporal ones keep 1e-5).
NORM_EPS = 1e-6


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W]"""
    return rearrange(x, "b c t h w -> (b t) c h w")


def from_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]"""
    return rearrange(x, "(b t) c h w -> b c t h w", b=batch)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice plus a (1x1-projected when widths differ) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C_in, H, W] -> [N, C_out, H, W]
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class FrameAttention(nn.Module):
    """Single-head self-attention over the H*W positions of one frame (the mid block's)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        # A list so the key is ``to_out.0`` as in diffusers (whose index 1 is a parameterless dropout).
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C, H, W]
        height = x.shape[2]
        h = rearrange(self.group_norm(x), "n c h w -> n (h w) c")
        q, k, v = (proj(h)[:, None] for proj in (self.to_q, self.to_k, self.to_v))  # [N, 1, HW, C]
        h = F.scaled_dot_product_attention(q, k, v)[:, 0]  # [N, HW, C]
        h = self.to_out[0](h)
        # Output first: the sum then keeps the channels-last strides diffusers' sum has, and the
        # next GroupNorm takes the same kernel path (same rounding) as the reference.
        return rearrange(h, "n (h w) c -> n c h w", h=height) + x


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right (SD's asymmetric pad)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C, H/2, W/2]
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C, 2H, 2W]
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
