"""One resolution of the encoder or decoder: 2D resnets per frame, each followed by a temporal layer.

Stages take and return ``[B, C, T, H, W]``. Inside, the 2D layers see frames folded into the batch
and the temporal layers see the clip; attribute names are diffusers' (``resnets``, ``temp_convs``,
``temp_convs_down``, ``temp_conv_up``, ``downsamplers.0``, ``upsamplers.0``, ``attentions``).
"""

from __future__ import annotations

import torch
from torch import nn

from allegro_train.models.vae.blocks import Downsample, FrameAttention, ResnetBlock, Upsample, from_frames, to_frames
from allegro_train.models.vae.temporal import TemporalConvBlock


class _Stage(nn.Module):
    """``layers`` x (resnet, temporal mix); subclasses add the temporal and spatial resampling."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(layers)]
        )
        self.temp_convs = nn.ModuleList([TemporalConvBlock(out_channels, groups) for _ in range(layers)])

    def _run(self, x: torch.Tensor, temporal: nn.Module | None, spatial: nn.ModuleList | None) -> torch.Tensor:
        for resnet, temp_conv in zip(self.resnets, self.temp_convs):
            x = temp_conv(from_frames(resnet(to_frames(x)), x.shape[0]))
        if temporal is not None:
            x = temporal(x)  # T -> T/2 or 2T
        if spatial is not None:
            x = from_frames(spatial[0](to_frames(x)), x.shape[0])  # H, W -> halved or doubled
        return x


class DownStage(_Stage):
    """Encoder stage: then temporal /2 and spatial /2 where enabled."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int,
                 spatial_downsample: bool, temporal_downsample: bool):
        super().__init__(in_channels, out_channels, layers, groups)
        self.temp_convs_down = TemporalConvBlock(out_channels, groups, mode="down") if temporal_downsample else None
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if spatial_downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T, H, W] -> [B, C_out, T', H', W']
        return self._run(x, self.temp_convs_down, self.downsamplers)


class UpStage(_Stage):
    """Decoder stage: then temporal x2 and spatial x2 where enabled."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int,
                 spatial_upsample: bool, temporal_upsample: bool):
        super().__init__(in_channels, out_channels, layers, groups)
        self.temp_conv_up = TemporalConvBlock(out_channels, groups, mode="up") if temporal_upsample else None
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if spatial_upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T, H, W] -> [B, C_out, T', H', W']
        return self._run(x, self.temp_conv_up, self.upsamplers)


class MidStage(nn.Module):
    """(resnet, temporal mix), then (per-frame attention, resnet, temporal mix): the bottleneck."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.temp_convs = nn.ModuleList([TemporalConvBlock(channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([FrameAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, H, W] -> same
        batch = x.shape[0]
        x = self.temp_convs[0](from_frames(self.resnets[0](to_frames(x)), batch))
        h = self.resnets[1](self.attentions[0](to_frames(x)))
        return self.temp_convs[1](from_frames(h, batch))
