"""Input embeddings of the DiT: video patches, the diffusion timestep and the T5 caption.

Module and parameter names follow diffusers (``pos_embed.proj``, ``adaln_single.emb.
timestep_embedder.linear_1``, ...) so that the released state dict loads without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """Per-frame Conv2d patchify: [B, C, T, H, W] -> [B, T*(H/p)*(W/p), D], tokens ordered (t, h, w).

    Named ``pos_embed`` in the released checkpoint although it holds no positional table: Allegro's
    positions come from 3D RoPE inside attention.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        batch = latents.shape[0]
        frames = rearrange(latents, "b c t h w -> (b t) c h w")
        patches = self.proj(frames)  # [B*T, D, H/p, W/p]
        return rearrange(patches, "(b t) d h w -> b (t h w) d", b=batch)


def sinusoidal_timestep_embedding(timestep: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[B] -> [B, dim] fp32, cos half first (diffusers' ``flip_sin_to_cos=True``, shift 0)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timestep.device) / half
    angles = timestep[:, None].float() * torch.exp(exponent)[None, :]  # [B, half]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepMLP(nn.Module):
    """256-d sinusoid -> Linear -> SiLU -> Linear (diffusers ``TimestepEmbedding``)."""

    def __init__(self, dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.linear_1 = nn.Linear(frequency_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        freq = sinusoidal_timestep_embedding(timestep, self.frequency_dim).to(dtype)
        return self.linear_2(F.silu(self.linear_1(freq)))


class _TimestepEmbedderHolder(nn.Module):
    # Only exists so the state-dict path reads ``adaln_single.emb.timestep_embedder``.
    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepMLP(dim)


class AdaLNSingle(nn.Module):
    """adaLN-single (PixArt-alpha): one timestep MLP shared by all blocks.

    Returns ``(modulation [B, 6*D], embedded_timestep [B, D])``: every block adds its own learned
    ``scale_shift_table`` to the first; the final layer modulates with the second.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.emb = _TimestepEmbedderHolder(dim)
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.emb.timestep_embedder(timestep, dtype)
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    """T5 states [B, L, caption_channels] -> [B, L, D]: Linear, GELU(tanh), Linear (PixArt-alpha)."""

    def __init__(self, caption_channels: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(caption_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, text_states: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(text_states), approximate="tanh"))
