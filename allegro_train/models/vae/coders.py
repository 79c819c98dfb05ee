"""Encoder3D and Decoder3D: the VideoVAE's two halves, stage by stage.

    encoder: video [B, 3, T, H, W] -> conv_in (+ temporal residual) -> stages (/4 time, /8 space)
             -> mid (attention per frame) -> norm, SiLU (+ temporal residual) -> conv_out [B, 2*4, T/4, H/8, W/8]
    decoder: the mirror image, from z [B, 4, T/4, H/8, W/8] to [B, 3, T, H, W]

The temporal residuals ``temp_conv_in`` / ``temp_conv_out`` are Conv3d k(3,1,1) with zero padding in
time (as released), added to their input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from allegro_train.models.vae.blocks import NORM_EPS, from_frames, to_frames
from allegro_train.models.vae.config import VAEConfig
from allegro_train.models.vae.stages import DownStage, MidStage, UpStage


def _per_frame(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return from_frames(layer(to_frames(x)), x.shape[0])


def _temporal_conv(channels: int) -> nn.Conv3d:
    return nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))


class _Coder(nn.Module):
    """What both halves share: stage-wise activation checkpointing."""

    checkpointing = False

    def _run(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, x, use_reentrant=False)
        return stage(x)


class Encoder3D(_Coder):
    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.temp_conv_in = _temporal_conv(widths[0])
        self.down_blocks = nn.ModuleList(
            DownStage(widths[max(i - 1, 0)], widths[i], config.layers_per_block, groups,
                      spatial_downsample=i < len(widths) - 1,
                      temporal_downsample=config.temporal_downsample_blocks[i])
            for i in range(len(widths))
        )
        self.mid_block = MidStage(widths[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=NORM_EPS)
        self.temp_conv_out = _temporal_conv(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, C_in, T, H, W] -> moments [B, 2*latent, T/4, H/8, W/8] (before quant_conv)."""
        x = _per_frame(self.conv_in, video)
        x = x + self.temp_conv_in(x)
        for stage in self.down_blocks:
            x = self._run(stage, x)
        x = self._run(self.mid_block, x)
        x = _per_frame(lambda f: F.silu(self.conv_norm_out(f)), x)  # GroupNorm statistics per frame
        x = x + self.temp_conv_out(x)
        return _per_frame(self.conv_out, x)


class Decoder3D(_Coder):
    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups = tuple(reversed(config.block_out_channels)), config.norm_num_groups
        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        self.temp_conv_in = _temporal_conv(widths[0])
        # One more resnet a stage than the encoder, as in SD's decoder. Registered before the mid
        # block (though run after it) so the state dict lists keys in diffusers' order.
        self.up_blocks = nn.ModuleList(
            UpStage(widths[max(i - 1, 0)], widths[i], config.layers_per_block + 1, groups,
                    spatial_upsample=i < len(widths) - 1,
                    temporal_upsample=config.temporal_upsample_blocks[i])
            for i in range(len(widths))
        )
        self.mid_block = MidStage(widths[0], groups)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=NORM_EPS)
        self.temp_conv_out = _temporal_conv(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent, T', H', W'] (after post_quant_conv) -> [B, C_out, 4T', 8H', 8W']."""
        x = _per_frame(self.conv_in, z)
        x = x + self.temp_conv_in(x)
        x = self._run(self.mid_block, x)
        for stage in self.up_blocks:
            x = self._run(stage, x)
        x = _per_frame(lambda f: F.silu(self.conv_norm_out(f)), x)
        x = x + self.temp_conv_out(x)
        return _per_frame(self.conv_out, x)
