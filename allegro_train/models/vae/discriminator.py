"""The VAE's adversary: a PatchGAN (pix2pix; taming-transformers' ``NLayerDiscriminator``) in 3D.

    clip [B, 3, T, H, W] in [-1, 1]
      -> Conv3d k(3,4,4) s(1,2,2), LeakyReLU(0.2)                         [B, C, T, H/2, W/2]
      -> (layers - 1) x [Conv3d k(3,4,4) s(1,2,2), GroupNorm, LeakyReLU]   widths x2 each, at most 8C
      -> Conv3d k(3,4,4) s1, GroupNorm, LeakyReLU -> Conv3d k(3,4,4) s1    [B, 1, T, h, w] logits

One logit per space-time patch. Time is never strided (kernel 3, padding 1), so a still image clip
of 4 frames and a 24-frame clip both work; each logit sees 2 x (layers + 1) + 1 frames. GroupNorm
replaces taming's BatchNorm: no running statistics, which would drift apart on data-parallel
ranks that each see their own batch. Needs H, W >= 2^layers * 4 or so (32 for layers=3).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _conv(c_in: int, c_out: int, spatial_stride: int) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, (3, 4, 4), stride=(1, spatial_stride, spatial_stride), padding=1)


class PatchDiscriminator3D(nn.Module):
    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [_conv(in_channels, channels, 2), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, layers + 1):
            out = channels * min(2 ** n, 8)
            blocks += [_conv(width, out, 2 if n < layers else 1), _norm(out), nn.LeakyReLU(0.2)]
            width = out
        blocks.append(_conv(width, 1, 1))
        self.net = nn.Sequential(*blocks)
        self.init_weights()

    def init_weights(self) -> None:
        """taming's ``weights_init``: convs N(0, 0.02), norm scales N(1, 0.02), biases zero."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """clip [B, 3, T, H, W] -> patch logits [B, 1, T, h, w]."""
        return self.net(clip)
