"""EMA of the DiT's weights that works under every ZeRO stage.

Under ZeRO-3 each rank holds a flat partition of every parameter (``param.ds_tensor``); the EMA
keeps the same partition, so it costs 4 bytes per parameter spread over all ranks, not per rank.
Under ZeRO 0-2 parameters are replicated and so is the EMA; only rank 0 saves it.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class EMA:
    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.names, self.params = zip(*[(n, p) for n, p in module.named_parameters() if p.requires_grad])
        self.zero3 = hasattr(self.params[0], "ds_tensor")
        self.shadow = [self._local(p).detach().float().clone() for p in self.params]

    def _local(self, param: nn.Parameter) -> torch.Tensor:
        return param.ds_tensor if self.zero3 else param

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- decay * shadow + (1 - decay) * param, after each optimizer step."""
        current = [self._local(p).detach().float() for p in self.params]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        return {"shadow": self.shadow}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state['shadow'])} tensors, the model {len(self.shadow)}")
        for mine, saved in zip(self.shadow, state["shadow"]):
            if mine.shape != saved.shape:
                raise ValueError(f"EMA tensor shape {tuple(saved.shape)} != {tuple(mine.shape)}: "
                                 "resume with the ZeRO stage and world size the checkpoint was written with")
            mine.copy_(saved)

    @torch.no_grad()
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights as a full state dict (every rank must call it under ZeRO-3)."""
        if not self.zero3:
            return {n: s.clone() for n, s in zip(self.names, self.shadow)}
        import deepspeed

        # Swap the EMA partitions in, gather full tensors, swap the weights back.
        backup = [p.ds_tensor.detach().clone() for p in self.params]
        for p, s in zip(self.params, self.shadow):
            p.ds_tensor.copy_(s)
        try:
            with deepspeed.zero.GatheredParameters(list(self.params)):
                return {n: p.detach().float().clone() for n, p in zip(self.names, self.params)}
        finally:
            for p, b in zip(self.params, backup):
                p.ds_tensor.copy_(b)


@torch.no_grad()
def full_module_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's full state dict, gathering ZeRO-3 partitions when there are any."""
    params = list(module.parameters())
    gather = contextlib.nullcontext()
    if params and hasattr(params[0], "ds_tensor"):
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(params)
    with gather:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
