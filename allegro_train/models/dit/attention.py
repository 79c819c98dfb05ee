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


QKV = ("to_q", "to_k", "to_v")  # diffusers' names, in the order the fused weight stacks them


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names (``to_q``, ``to_k``, ``to_v``, ``to_out.0``).

    Self-attention when ``context`` is None (with RoPE), cross-attention to ``context`` otherwise.
    ``fuse_qkv()`` turns self-attention's three projections into one Linear ``to_qkv``.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None, bias: bool = True,
                 dropout: float = 0.0, backend: str = "sdpa"):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.cross = context_dim is not None  # keys and values read the context (text), not x
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=True), nn.Dropout(dropout)])
        self.core = CoreAttention(backend)

    @property
    def fused(self) -> bool:
        return "to_qkv" in self._modules

    @torch.no_grad()
    def fuse_qkv(self) -> None:
        """Replace ``to_q``, ``to_k``, ``to_v`` by one Linear ``to_qkv`` (weight [3 inner, dim], rows q, k, v).

        One GEMM with a 3x wider output instead of three: fewer kernel launches and a better-shaped
        matmul. The state dict keeps diffusers' three keys both ways (the hooks below split on save
        and join on load), so checkpoints, exports and ``from_pretrained`` see the released layout.
        Self-attention only: cross-attention's keys and values read the text, its query the video.
        """
        if self.fused:
            return
        if self.cross:
            raise ValueError("fuse_qkv: cross-attention's q reads the video and k, v the text; only self-attention fuses")
        q, k, v = (getattr(self, name) for name in QKV)
        weight = q.weight
        # built on meta and filled by copies: no default init, so no random draws are consumed
        fused = nn.Linear(q.in_features, 3 * q.out_features, bias=q.bias is not None, device="meta",
                          dtype=weight.dtype).to_empty(device=weight.device)
        fused.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
        fused.requires_grad_(weight.requires_grad)
        for name in QKV:
            delattr(self, name)
        # first among the children, where to_q was: parameter order (hence init_weights' random
        # draws and optimizer order) stays q, k, v, to_out
        self._modules = {"to_qkv": fused, **self._modules}
        self.register_state_dict_post_hook(_split_qkv)
        self.register_load_state_dict_pre_hook(_join_qkv)

    def project_qkv(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """x [B, N, D], context [B, L, C] or None -> q [B, N, H, Dh], k and v [B, N or L, H, Dh]."""
        if self.fused:
            qkv = rearrange(self.to_qkv(x), "b n (three h d) -> three b n h d", three=3, h=self.heads)
            # v copied out of the fused output: as a view it would keep q and k's pre-RoPE values
            # alive until backward (sdpa saves v), 2 D activations a token more than unfused
            return qkv[0], qkv[1], qkv[2].contiguous()
        source = x if context is None else context
        return tuple(rearrange(proj(inp), "b n (h d) -> b n h d", h=self.heads)
                     for proj, inp in ((self.to_q, x), (self.to_k, source), (self.to_v, source)))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x [B, N, D], context [B, L, C] -> [B, N, D]."""
        q, k, v = self.project_qkv(x, context)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = self.core(q, k, v, key_mask)  # [B, N, H, Dh]
        out = rearrange(out, "b n h d -> b n (h d)")
        return self.to_out[1](self.to_out[0](out))


def split_qkv_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fused ``*.to_qkv.{weight,bias}`` -> diffusers' ``*.to_q/to_k/to_v.{weight,bias}``, in their place;
    other keys unchanged. For state dicts keyed by parameter name (the EMA's) and the hook below.

    The parts are views of the fused tensor (state_dict's tensors alias parameters too). A ZeRO-3
    partition placeholder (0 elements) stands for each of its parts.
    """
    out = {}
    for key, value in state.items():
        stem, fused, kind = key.rpartition("to_qkv.")
        if not fused:
            out[key] = value
        elif kind == "weight" or f"{stem}to_qkv.weight" not in state:  # a bias is placed with its weight
            kinds = [k for k in ("weight", "bias") if f"{stem}to_qkv.{k}" in state]
            parts = {k: _thirds(state[f"{stem}to_qkv.{k}"]) for k in kinds}
            for i, name in enumerate(QKV):
                out.update({f"{stem}{name}.{k}": parts[k][i] for k in kinds})
    return out


def _thirds(fused: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (fused,) * 3 if fused.numel() == 0 else fused.chunk(3)


def _split_qkv(module: Attention, state: dict, prefix: str, local_metadata) -> None:
    """State-dict post-hook of a fused attention: diffusers' keys, in the unfused order, in place.
    This module's keys are the newest in ``state``, so re-adding them keeps the order."""
    own = {key: state.pop(key) for key in [key for key in state if key.startswith(prefix)]}
    state.update(split_qkv_keys(own))


def _join_qkv(module: Attention, state: dict, prefix: str, local_metadata, strict, missing_keys, unexpected_keys,
              error_msgs) -> None:
    """Load pre-hook of a fused attention: diffusers' ``to_q/to_k/to_v.*`` -> ``to_qkv.*``, in place.

    Keys absent from ``state`` stay absent, so a partial state dict reports ``to_qkv.*`` missing."""
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in QKV]
        if all(key in state for key in keys):
            state[f"{prefix}to_qkv.{kind}"] = torch.cat([state.pop(key) for key in keys])
