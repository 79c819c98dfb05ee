"""Sequence-parallel groups inside the ZeRO data-parallel world.

With ``parallel.sequence_parallel=K`` the W ranks form W/K sequence-parallel (SP) groups of K
consecutive ranks (one node's GPUs, so the per-layer all-to-alls stay on NVLink):

    ranks       0 1 | 2 3 | 4 5 | 6 7        W = 8, K = 2
    SP group      0 |   1 |   2 |   3      = the data-parallel (DP) rank: one sample stream each
    SP rank     0 1 | 0 1 | 0 1 | 0 1        which slice of the tokens a rank computes

Every rank of an SP group reads the same batch (the loader runs with the DP rank and size) and
draws the same noise, timesteps and caption dropout. DeepSpeed is not told about the groups: ZeRO
shards states and averages gradients over all W ranks as plain data parallelism, and the SP
ranks' gradients are pre-scaled so that this average is exact (``ulysses.py``). Why not
DeepSpeed's own sequence-parallel mpu: docs/parallelism.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as tdist

from allegro_train.config import ConfigError
from allegro_train.parallel.distributed import DistInfo


@dataclass(frozen=True)
class SequenceGroups:
    size: int  # K: ranks of one SP group
    rank: int  # this rank's place in its SP group
    dp_size: int  # W / K: SP groups, i.e. sample streams
    dp_rank: int  # which SP group this rank is in
    group: Any = None  # the SP process group; None when K == 1

    @property
    def enabled(self) -> bool:
        return self.size > 1


def build_sequence_groups(size: int, dist: DistInfo) -> SequenceGroups:
    """This rank's SP and DP layout (collective: every rank calls it); K == 1 is plain data parallelism."""
    if size < 1 or dist.world_size % size:
        raise ConfigError(f"parallel.sequence_parallel={size}: must divide the number of ranks "
                          f"({dist.world_size}); launch a multiple of {size} processes")
    if size == 1:
        return SequenceGroups(1, 0, dist.world_size, dist.rank)
    group = None
    for start in range(0, dist.world_size, size):  # new_group is collective: every rank makes every group
        ranks = list(range(start, start + size))
        made = tdist.new_group(ranks)
        if dist.rank in ranks:
            group = made
    return SequenceGroups(size, dist.rank % size, dist.world_size // size, dist.rank // size, group)


def check_resume_layout(checkpoint: Path, sp: SequenceGroups) -> None:
    """Refuse to resume a checkpoint written under another SP degree, before anything is loaded.

    Each rank's loader position belongs to its data-parallel rank, and the DP size changes with K;
    checkpoints from before sequence parallelism existed were written with K = 1.
    """
    written = json.loads((checkpoint / "trainer.json").read_text()).get("sequence_parallel", 1)
    if written != sp.size:
        raise ConfigError(f"parallel.sequence_parallel={sp.size}: {checkpoint} was written with "
                          f"sequence_parallel={written}; resume with the same degree (or a new run.dir)")
