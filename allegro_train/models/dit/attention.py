"""Attention for the DiT: projections, RoPE and a swappable core that does softmax(QK^T)V.

``CoreAttention`` works on [B, N, heads, head_dim], the layout flash-attn takes and the one
DeepSpeed's Ulysses ``DistributedAttention`` all-to-alls over, so sequence parallelism wraps
``attn.core`` from outside (``allegro_train.parallel``) and the model never sees torch.distributed.

Backends (chosen by config, never by a silent fallback):
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (default; PyTorch picks its
  cuDNN / flash / memory-efficient kernel).
- ``flash``: flash-attn 2/3 (``pip install allegro_train[gpu]``); CUDA with fp16/bf16 only.
- ``auto``: ``flash`` when flash-attn is installed and CUDA is available, else ``sdpa``; logged.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from allegro_train.models.dit.rope import apply_rope

log = logging.getLogger(__name__)

BACKENDS = ("sdpa", "flash", "auto")
# Added to the scores of padded text tokens. A finite bias (as the released model uses) keeps an
# all-padding row finite instead of NaN.
MASKED_SCORE_BIAS = -10000.0


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_backend(name: str) -> str:
    """Map a configured backend name to the one that will run; raise for unusable choices."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is not one of {BACKENDS}")
    if name == "flash" and not flash_attn_available():
        raise ImportError(
            "attention backend 'flash' needs the flash-attn package (pip install 'allegro_train[gpu]'); "
            "use 'sdpa' or 'auto'"
        )
    if name == "auto":
        picked = "flash" if flash_attn_available() and torch.cuda.is_available() else "sdpa"
        log.info("attention backend 'auto' picked %r", picked)
        return picked
    return name


class CoreAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V over [B, N, heads, head_dim]; padded keys masked by ``key_mask``."""

    def __init__(self, backend: str = "sdpa"):
        super().__init__()
        self.backend = resolve_backend(backend)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q [B, Nq, H, D], k/v [B, Nk, H, D], key_mask [B, Nk] bool (True = attend) -> [B, Nq, H, D]."""
        if self.backend == "flash":
            return _flash_attention(q, k, v, key_mask)
        bias = None
        if key_mask is not None:
            bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
            bias = bias.masked_fill(~key_mask, MASKED_SCORE_BIAS)[:, None, None, :]  # [B, 1, 1, Nk]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
        return out.transpose(1, 2)


def _flash_attention(q, k, v, key_mask):
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError(
            f"attention backend 'flash' runs on CUDA in fp16/bf16, got {q.device.type} {q.dtype}; use 'sdpa'"
        )
    flash_attn = importlib.import_module("flash_attn")
    if key_mask is None:
        return flash_attn.flash_attn_func(q, k, v)
    # Padded text keys: pack the kept keys and run the variable-length kernel.
    batch, q_len, heads, head_dim = q.shape
    key_lens = key_mask.sum(dim=1, dtype=torch.int32)  # [B]
    cu_k = F.pad(key_lens.cumsum(0, dtype=torch.int32), (1, 0))
    cu_q = torch.arange(0, (batch + 1) * q_len, q_len, dtype=torch.int32, device=q.device)
    out = flash_attn.flash_attn_varlen_func(
        q.reshape(batch * q_len, heads, head_dim),
        k[key_mask],
        v[key_mask],
        cu_q,
        cu_k,
        q_len,
        int(key_lens.max()),
    )
    return out.view(batch, q_len, heads, head_dim)


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names (``to_q``, ``to_k``, ``to_v``, ``to_out.0``).

    Self-attention when ``context`` is None (with RoPE), cross-attention to ``context`` otherwise.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None, bias: bool = True,
                 dropout: float = 0.0, backend: str = "sdpa"):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=True), nn.Dropout(dropout)])
        self.core = CoreAttention(backend)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x [B, N, D], context [B, L, C] -> [B, N, D]."""
        source = x if context is None else context
        q = rearrange(self.to_q(x), "b n (h d) -> b n h d", h=self.heads)
        k = rearrange(self.to_k(source), "b n (h d) -> b n h d", h=self.heads)
        v = rearrange(self.to_v(source), "b n (h d) -> b n h d", h=self.heads)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = self.core(q, k, v, key_mask)  # [B, N, H, Dh]
        out = rearrange(out, "b n h d -> b n (h d)")
        return self.to_out[1](self.to_out[0](out))
