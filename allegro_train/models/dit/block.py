"""One Allegro DiT block: modulated 3D self-attention, cross-attention to text, modulated FFN.

    x = x + gate_msa * SelfAttn(LN(x) * (1 + scale_msa) + shift_msa, RoPE)
    x = x + CrossAttn(x, text)                  # no norm, no gate (as released)
    x = x + gate_mlp * FFN(LN(x) * (1 + scale_mlp) + shift_mlp)

The six modulation vectors are the shared adaLN-single output plus this block's own
``scale_shift_table``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from allegro_train.models.dit.attention import Attention
from allegro_train.models.dit.config import DiTConfig


def layer_norm_fp32(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Affine-free LayerNorm with statistics in fp32 (bf16 statistics over 2304 channels drift)."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class GELUTanhProjection(nn.Module):
    """Linear then GELU(tanh); diffusers names it ``ff.net.0`` with the Linear at ``.proj``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(GELUTanhProjection(dim, mult * dim), nn.Dropout(dropout), nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AllegroBlock(nn.Module):
    def __init__(self, config: DiTConfig, attention_backend: str = "sdpa"):
        super().__init__()
        dim, heads, head_dim = config.inner_dim, config.num_attention_heads, config.attention_head_dim
        self.norm_eps = config.norm_eps
        common = dict(bias=config.attention_bias, dropout=config.dropout, backend=attention_backend)
        self.attn1 = Attention(dim, heads, head_dim, **common)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=config.cross_attention_dim, **common)
        self.ff = FeedForward(dim, dropout=config.dropout)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        modulation: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        self_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, N, D]; context [B, L, D]; context_mask [B, L] bool; modulation [B, 6*D] -> [B, N, D].

        ``self_mask`` [B, N_keys] bool masks self-attention keys (padding added by sequence parallelism;
        N_keys is the key length ``attn1.core`` sees); None when every key is a real token."""
        batch, _, dim = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + modulation.view(batch, 6, dim)
        ).chunk(6, dim=1)  # each [B, 1, D]

        h = modulate(layer_norm_fp32(x, self.norm_eps), shift_msa, scale_msa)
        x = x + gate_msa * self.attn1(h, key_mask=self_mask, rope=rope)
        x = x + self.attn2(x, context=context, key_mask=context_mask)
        h = modulate(layer_norm_fp32(x, self.norm_eps), shift_mlp, scale_mlp)
        return x + gate_mlp * self.ff(h)
