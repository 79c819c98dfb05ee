"""Ulysses sequence parallelism for the plain ``AllegroDiT``, applied from outside.

``apply_sequence_parallel(model, group)`` swaps two kinds of parameter-free modules:

- ``model.sequence`` -> ``UlyssesSequence``: after the patch embedding each of the K ranks keeps
  one contiguous slice of the N tokens (padded to a multiple of K) with the RoPE rows of its true
  positions; after ``proj_out`` the 16-channel outputs are all-gathered and the padding cut off.
- each block's ``attn1.core`` -> ``UlyssesAttention``: DeepSpeed's ``DistributedAttention``
  all-to-alls q, k, v from [B, N/K, H, d] to [B, N, H/K, d], runs the original core (sdpa or
  flash) over the whole sequence for H/K heads, and all-to-alls the output back.

Cross-attention, the FFN, norms and modulation are per token and run on the local slice as they
are. Padding: the padded keys are masked out of self-attention (the core's ``key_mask``; the
finite -10000 bias underflows to an exact zero weight in fp32 and bf16), and the padded tokens'
outputs are cut before unpatchify, so they never reach the loss nor any gradient.

Gradient contract: every rank of the group computes the same loss from the gathered output (the
trainer feeds them the same batch, noise and timesteps), so the gradient reaching ``gather`` is
already the whole one on every rank. Its backward keeps this rank's slice, times K: each rank's
parameter gradients are then K x the share of its own tokens, and their *mean* over the group is
the single-process gradient. SP ranks thus look like data-parallel replicas to whatever averages
gradients over all ranks (DeepSpeed ZeRO 0-3, DDP), with no sequence-parallel support needed there.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

Rope = tuple[torch.Tensor, torch.Tensor]


def shard_length(num_tokens: int, size: int) -> int:
    """Tokens a rank computes: N / K rounded up (the last rank's slice ends in padding)."""
    return -(-num_tokens // size)


class _GatherTokens(torch.autograd.Function):
    """[B, n, C] slices of K ranks -> [B, N, C] on each; backward: K x this rank's slice (see module doc)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, rank: int, num_tokens: int) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.rank, ctx.local, ctx.size = rank, x.shape[1], len(parts)
        return torch.cat(parts, dim=1)[:, :num_tokens]  # [B, N, C]: padding cut

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        start = ctx.rank * ctx.local
        grad = grad[:, start:start + ctx.local] * ctx.size  # [B, <= n, C]: the last slice may end in padding
        return F.pad(grad, (0, 0, 0, ctx.local - grad.shape[1])), None, None, None


class UlyssesSequence(nn.Module):
    """``model.sequence`` for one SP group: this rank's token slice in, every token out."""

    def __init__(self, group):
        super().__init__()
        self.group = group
        self.size, self.rank = dist.get_world_size(group), dist.get_rank(group)

    def split(self, x: torch.Tensor, rope: Rope) -> tuple[torch.Tensor, Rope, torch.Tensor | None]:
        """x [B, N, D], rope [N, d] x 2 -> x [B, n, D], rope [n, d] x 2, key mask [B, n*K] or None."""
        batch, num_tokens, _ = x.shape
        local = shard_length(num_tokens, self.size)
        pad = local * self.size - num_tokens
        mask = None
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
            cos, sin = rope  # padded rows rotate by zero: cos 1, sin 0
            rope = F.pad(cos, (0, 0, 0, pad), value=1.0), F.pad(sin, (0, 0, 0, pad))
            # keys as the core sees them after the all-to-all: all K slices, real ones first
            mask = (torch.arange(local * self.size, device=x.device) < num_tokens).expand(batch, -1)
        # copies (a slice of a batch of one is contiguous already): views would keep the whole
        # sequence's storage alive until backward
        start = self.rank * local
        cos, sin = (table[start:start + local].clone() for table in rope)
        return x[:, start:start + local].clone(), (cos, sin), mask

    def gather(self, x: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """[B, n, C] -> [B, N, C]."""
        return _GatherTokens.apply(x, self.group, self.rank, num_tokens)


class UlyssesAttention(nn.Module):
    """``attn.core`` over a token slice: heads scattered, sequence gathered, the wrapped core in between.

    DeepSpeed's ``DistributedAttention`` (three all-to-alls in, one out, with autograd) rather than
    our own: it is maintained, tested with ZeRO and works on NCCL and gloo alike; see
    docs/parallelism.md for the trade-offs.
    """

    def __init__(self, core: nn.Module, group):
        super().__init__()
        from deepspeed.sequence.layer import DistributedAttention

        # q, k, v [B, n, H, d]: scatter heads (dim 2), gather sequence (dim 1); batch is dim 0
        self.exchange = DistributedAttention(core, group, scatter_idx=2, gather_idx=1)

    @property
    def backend(self) -> str:  # AllegroDiT.set_attention_backend sets it on every attn.core
        return self.exchange.local_attn.backend

    @backend.setter
    def backend(self, value: str) -> None:
        self.exchange.local_attn.backend = value

    def forward(self, q, k, v, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """q, k, v [B, n, H, d]; key_mask [B, n*K] over the gathered keys -> [B, n, H, d]."""
        return self.exchange(q, k, v, 0, None, key_mask)


def apply_sequence_parallel(model: nn.Module, group) -> nn.Module:
    """Split ``model``'s (an ``AllegroDiT``) tokens over ``group``; in place, returns the model.

    Apply before ``torch.compile`` and before DeepSpeed wraps the model, as torchtitan orders it.
    """
    size = dist.get_world_size(group)
    heads = model.config.num_attention_heads
    if heads % size:
        raise ValueError(f"sequence parallel degree {size} must divide the {heads} attention heads (Ulysses "
                         "gives each rank heads / degree heads)")
    model.sequence = UlyssesSequence(group)
    for block in model.transformer_blocks:
        block.attn1.core = UlyssesAttention(block.attn1.core, group)
    return model
