"""Where the DiT's token sequence lives: whole on this process, unless parallelism swaps it.

``AllegroDiT.sequence`` is called twice a forward: ``split`` after the patch embedding (tokens
and their RoPE tables -> the tokens this process computes) and ``gather`` after ``proj_out``
(this process's per-token outputs -> all of them, before unpatchify). Every other layer is per
token or attends through ``attn.core``, so swapping these two points (and the self-attention
core) is all sequence parallelism needs; ``allegro_train.parallel.ulysses`` does it from outside.
Gathering after ``proj_out`` moves p*p*C_out = 16 channels a token rather than the 2304 of the
hidden state.
"""

from __future__ import annotations

import torch
from torch import nn

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin [N, head_dim]


class FullSequence(nn.Module):
    """All N tokens on this process: ``split`` and ``gather`` are the identity. No parameters."""

    def split(self, x: torch.Tensor, rope: Rope) -> tuple[torch.Tensor, Rope, torch.Tensor | None]:
        """x [B, N, D], rope [N, head_dim] x 2 -> this process's tokens [B, n, D], their rope [n, head_dim] x 2,
        and the self-attention key mask [B, N_keys] bool (True = attend) or None when every key is real."""
        return x, rope, None

    def gather(self, x: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """This process's outputs [B, n, C] -> all ``num_tokens`` tokens' [B, N, C]."""
        return x
