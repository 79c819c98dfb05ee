"""Activation checkpointing of the DiT's blocks: which blocks recompute, and what they keep.

    "none"        nothing recomputed
    "all"         every block keeps only its inputs and recomputes everything in backward
    "every_<k>"   blocks with index % k == 0 as "all", the others as "none"
    "selective"   every block recomputes, except the attention kernels: their outputs (and
                  logsumexps) are kept, so backward reruns only the projections, the FFN, norms
                  and modulation. At 79,200 tokens attention is 83 % of the FLOPs, so this
                  recomputes about a fifth of what "all" does, for 2 D activations a token and
                  block more than "all" (docs/dit.md, parallel/memory.py).

"selective" is torch's selective activation checkpointing (``create_selective_checkpoint_contexts``,
torch >= 2.4) with the policy torchtitan uses for attention: save the SDPA kernels' (and
flash-attn's) outputs, recompute the rest. Matmul outputs are not kept: saving q, k, v, the
output projection and the 4D-wide FFN hidden state would cost almost what "none" does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts, noop_context_fn

_aten = torch.ops.aten
# SDPA's fused kernels, as autograd dispatches them below F.scaled_dot_product_attention (the math
# backend decomposes into matmuls and softmax, which "selective" then recomputes). Names a torch
# build lacks are skipped: such a build cannot dispatch to them either.
ATTENTION_OPS = frozenset(
    getattr(_aten, name).default
    for name in ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_fused_attention_overrideable")
    if hasattr(_aten, name)
)


def keeps_output(op) -> bool:
    """Whether "selective" keeps this op's outputs: an SDPA kernel or a flash-attn forward custom op."""
    return op in ATTENTION_OPS or (getattr(op, "namespace", None) == "flash_attn" and "forward" in op.__name__)


def _save_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    # MUST (not PREFER) so the choice also holds under torch.compile's partitioner
    return CheckpointPolicy.MUST_SAVE if keeps_output(op) else CheckpointPolicy.PREFER_RECOMPUTE


@dataclass(frozen=True)
class Checkpointing:
    """A parsed ``activation_checkpointing`` policy."""

    every: int = 0  # blocks i with i % every == 0 are checkpointed; 0: none
    selective: bool = False  # checkpointed blocks keep their attention outputs

    def recomputes(self, block_index: int) -> bool:
        return bool(self.every) and block_index % self.every == 0

    @property
    def context_fn(self) -> Callable:
        """``torch.utils.checkpoint``'s ``context_fn`` for a checkpointed block."""
        if self.selective:
            return functools.partial(create_selective_checkpoint_contexts, _save_attention)
        return noop_context_fn


def parse_checkpointing(policy: str | int) -> Checkpointing:
    """``"none"``, ``"all"``, ``"every_<k>"`` / k (blocks i with i % k == 0), ``"selective"``."""
    if isinstance(policy, int) and not isinstance(policy, bool) and policy >= 0:
        return Checkpointing(policy)
    if policy == "none":
        return Checkpointing(0)
    if policy == "all":
        return Checkpointing(1)
    if policy == "selective":
        return Checkpointing(1, selective=True)
    if isinstance(policy, str) and policy.startswith("every_") and policy[6:].isdigit() and int(policy[6:]) > 0:
        return Checkpointing(int(policy[6:]))
    raise ValueError(f"activation_checkpointing={policy!r}: use 'none', 'all', 'selective' or 'every_<k>' (k >= 1)")
