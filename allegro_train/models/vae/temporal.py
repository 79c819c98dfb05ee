"""The VideoVAE's temporal layers: a residual stack of four GroupNorm-SiLU-Conv3d mixing frames.

One class serves three roles (as in the released code), chosen by ``mode``:

- ``"mix"``: after every 2D resnet; Conv3d k(3,1,1), time kept.
- ``"down"``: the encoder's temporal downsample; the first conv is k(2,3,3) stride (2,1,1) and the
  shortcut keeps every second frame, so T -> T/2.
- ``"up"``: the decoder's temporal upsample; the first conv doubles the channels, which are
  shuffled into time (2x channel-to-time), and the shortcut repeats every frame, so T -> 2T.

Down/up use 3x3 spatial kernels throughout, "mix" 1x1. Time is padded by replicating the edge
frames, never with zeros, so a clip's first and last frames see themselves, not black.
Because the output is ``shortcut + conv4(...)``, a zero ``conv4`` makes the layer an exact frame
copy / subsample / duplicate: the identity start of training and of inflation (``init_identity``).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

MODES = ("mix", "down", "up")


def _pad_time(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C, T+2, H, W], edge frames replicated (``cat``: faster on CPU than
    ``F.pad(mode="replicate")``, same values)."""
    return torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)


class TemporalConvBlock(nn.Module):
    def __init__(self, channels: int, groups: int, mode: str = "mix", dropout: float = 0.1):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: expected one of {MODES}")
        self.mode = mode
        k = 1 if mode == "mix" else 3  # spatial kernel
        p = k // 2
        if mode == "down":
            first = nn.Conv3d(channels, channels, (2, k, k), stride=(2, 1, 1), padding=(0, p, p))
        elif mode == "up":
            first = nn.Conv3d(channels, 2 * channels, (1, k, k), padding=(0, p, p))
        else:
            first = nn.Conv3d(channels, channels, (3, k, k), padding=(0, p, p))
        # Sequential indices are part of the state-dict keys (conv1.2, conv2.3, ...): keep the order.
        self.conv1 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), first)
        self.conv2 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout),
                                   nn.Conv3d(channels, channels, (3, k, k), padding=(0, p, p)))
        self.conv3 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout),
                                   nn.Conv3d(channels, channels, (3, k, k), padding=(0, p, p)))
        self.conv4 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                   nn.Conv3d(channels, channels, (3, k, k), padding=(0, p, p)))

    def init_identity(self) -> None:
        """Zero the last conv: the layer then copies (mix), subsamples (down) or duplicates (up) frames."""
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T, H, W] -> [B, C, T', H, W] with T' = T, T/2 or 2T by mode."""
        frames = x.shape[2]
        if self.mode == "down":
            if frames % 2:
                raise ValueError(f"temporal downsample got {frames} frames: it needs an even count")
            shortcut = x[:, :, ::2]
            h = self.conv1(x)  # [B, C, T/2, H, W]
        elif self.mode == "up":
            shortcut = x.repeat_interleave(2, dim=2)
            h = rearrange(self.conv1(x), "b (k c) t h w -> b c (t k) h w", k=2)  # [B, C, 2T, H, W]
        else:
            shortcut = x
            h = self.conv1(_pad_time(x))
        h = self.conv2(_pad_time(h))
        h = self.conv3(_pad_time(h))
        h = self.conv4(_pad_time(h))
        return shortcut + h
