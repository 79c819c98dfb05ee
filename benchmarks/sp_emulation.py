"""One rank's share of Ulysses sequence parallelism, on one device, without communication.

``dit_step.py --emulate-sp K`` measures what a rank of a K-way SP group computes and holds (its
N/K tokens through the per-token layers, attention over all N keys for H/K heads) on a single
GPU: memory and compute per rank, not the all-to-all time. The exchanges are replaced by copies
of the same shapes (this rank's tokens repeated K times), so buffers and FLOPs match
``allegro_train.parallel.ulysses``; the numbers computed are meaningless and not checked.
"""

from __future__ import annotations

import torch
from torch import nn

from allegro_train.parallel.ulysses import shard_length


class EmulatedSequence(nn.Module):
    """``model.sequence`` of SP rank 0: the first ceil(N/K) tokens; gather repeats them K times."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def split(self, x, rope):
        local = shard_length(x.shape[1], self.size)
        return x[:, :local].clone(), tuple(t[:local].clone() for t in rope), None

    def gather(self, x, num_tokens: int):
        return x.repeat(1, self.size, 1)[:, :num_tokens]  # [B, N, C]


class EmulatedExchange(nn.Module):
    """``attn1.core``: [B, n, H, d] -> [B, n*K, H/K, d] -> the wrapped core -> [B, n, H, d]."""

    def __init__(self, core: nn.Module, size: int):
        super().__init__()
        self.core, self.size = core, size

    def forward(self, q, k, v, key_mask=None):
        heads = q.shape[2] // self.size
        q, k, v = (t[:, :, :heads].repeat(1, self.size, 1, 1) for t in (q, k, v))  # [B, nK, H/K, d]
        out = self.core(q, k, v, key_mask)
        return out[:, : out.shape[1] // self.size].repeat(1, 1, self.size, 1)  # [B, n, H, d]


def emulate_sequence_parallel(model: nn.Module, size: int) -> nn.Module:
    if model.config.num_attention_heads % size:
        raise ValueError(f"--emulate-sp {size} must divide the {model.config.num_attention_heads} heads")
    model.sequence = EmulatedSequence(size)
    for block in model.transformer_blocks:
        block.attn1.core = EmulatedExchange(block.attn1.core, size)
    return model
