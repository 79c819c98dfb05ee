"""Process-group setup for one launcher on one process, one node or many.

``torchrun`` (or SLURM via ``launch/slurm``) sets RANK / WORLD_SIZE / MASTER_ADDR; a plain
``python launch/train_dit.py`` gets a one-process group. NCCL on GPUs, gloo on CPUs (tests).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


_ENV_SET_HERE: list[str] = []  # rendezvous variables init_distributed invented for a one-process run


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> DistInfo:
    """Initialise torch.distributed through DeepSpeed (which also picks its accelerator)."""
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        # DeepSpeed otherwise probes for CUDA; its CPU accelerator runs ZeRO over gloo.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ:  # a plain `python ...`: a group of one, undone by shutdown()
        single = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": str(_free_port())}
        _ENV_SET_HERE.extend(k for k in single if k not in os.environ)
        os.environ.update(single)
    import deepspeed

    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if on_gpu:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group (a ZeRO-3 process aborts at exit otherwise)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _forget_deepspeed_groups()
    while _ENV_SET_HERE:
        os.environ.pop(_ENV_SET_HERE.pop(), None)


def _forget_deepspeed_groups() -> None:
    """DeepSpeed caches process groups in module globals; drop them with the group they belong to,
    so a second run in the same process (tests, notebooks) builds fresh ones."""
    import deepspeed.comm.comm as ds_comm
    import deepspeed.utils.groups as ds_groups

    for name, value in list(vars(ds_groups).items()):
        if name.startswith("_") and name.endswith(("_GROUP", "_GROUP_RANKS")):
            setattr(ds_groups, name, {} if isinstance(value, dict) else None)
    ds_groups.mpu = None
    ds_comm.cdb = None


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a float64 CPU tensor over ranks (metrics only; cheap and deterministic)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def average_gradients(module: torch.nn.Module) -> None:
    """Average a replicated module's gradients over ranks (a small model trained outside DeepSpeed)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    for param in module.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(dist.get_world_size())
