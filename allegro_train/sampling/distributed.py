"""Multi-GPU sampling: each denoising step's tokens split over one Ulysses sequence-parallel group.

    torchrun --nproc_per_node=K launch/sample.py checkpoint=... prompt="..." sequence_parallel=K

Every rank loads the pipeline, encodes the same prompts and draws the same noise and ancestral
noise from the same seed (a CPU generator), so all ranks start from the same latents. The DiT runs
through ``allegro_train.parallel.ulysses`` (each rank computes N/K of the tokens; self-attention
exchanges heads for the sequence by all-to-all) and its output is all-gathered, so every rank gets
the same prediction and takes the same scheduler step: the latents stay identical on all ranks
without any broadcast. Rank 0 decodes and writes the video; the decode is not split.

A TI2V transformer works the same way: every rank VAE-encodes the given frames from the same
generator and embeds the whole conditioned input before the tokens are split. Chained windows
(``windows > 1``) decode every window on every rank, as the next window is conditioned on its
frames.

Ulysses' all-to-all is DeepSpeed's, so this path needs deepspeed (single-process sampling does not).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from allegro_train.models import io
from allegro_train.models.dit import transformer_class
from allegro_train.sampling.components import resolve_components


def launched_ranks() -> int:
    """Processes of this launch: torchrun's WORLD_SIZE, 1 for a plain ``python``."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_sequence_parallel(size: int, checkpoint: str, vae: str | None, text_encoder: str | None) -> None:
    """Before any weight is read: the degree must divide the DiT's heads (Ulysses splits them)."""
    transformer = resolve_components(checkpoint, vae, text_encoder).transformer
    config = transformer_class(transformer).config_from_dict(io.read_config(transformer), source=str(transformer))
    heads = config.num_attention_heads
    if heads % size:
        raise ValueError(f"sequence_parallel={size}: must divide the {heads} attention heads of {transformer}")


@contextlib.contextmanager
def sequence_parallel_group(size: int) -> Iterator[tuple[object, object]]:
    """(DistInfo, SP process group) of a K-rank launch, torn down on exit; K == 1: (None, None)."""
    if size == 1:
        yield None, None
        return
    from allegro_train.parallel.distributed import init_distributed, shutdown
    from allegro_train.parallel.groups import build_sequence_groups

    info = init_distributed()
    try:
        yield info, build_sequence_groups(size, info).group
    finally:
        shutdown()
