"""``RunState``: what a relaunch restores besides DeepSpeed's own states, shared by both trainers.

Each checkpoint holds, per rank, the loader's position, the noise generator of the rank's sample
stream (its data-parallel rank), torch's global RNG (dropout), and the count of skipped non-finite
steps; the optimizer step and the run's layout (ZeRO stage, the trainer's ``meta``) go into
``trainer.json``. With these restored, a relaunched run draws exactly what an uninterrupted one
would have drawn, so its losses match bit for bit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from allegro_train.config import ConfigError
from allegro_train.parallel.distributed import DistInfo
from allegro_train.training.checkpoint import CheckpointManager
from allegro_train.training.faults import NonfiniteGuard

log = logging.getLogger(__name__)


def checkpoint_manager(cfg, dist: DistInfo) -> CheckpointManager:
    """The checkpoints of ``run.dir``."""
    return CheckpointManager(Path(cfg.run.dir) / "checkpoints", cfg.checkpoint.keep_last, dist)


def resume_point(cfg, dist: DistInfo) -> Optional[Path]:
    """The checkpoint ``RunState.resume`` will restore (the newest complete one, with ``checkpoint.resume``),
    or None; trainers look at its layout (``trainer.json``) before they build a model."""
    return checkpoint_manager(cfg, dist).latest() if cfg.checkpoint.resume else None


def check_resume_fused_qkv(checkpoint: Path, fused_qkv: bool) -> None:
    """Refuse to resume under another ``model.fused_qkv`` (the DiT trainer's ``RunState`` meta in
    ``trainer.json``), before anything is loaded: the model's weights load either way (diffusers
    keys), but the optimizer and EMA states are per parameter and fusing changes the parameters.
    Checkpoints from before the option were unfused."""
    written = json.loads((checkpoint / "trainer.json").read_text()).get("fused_qkv", False)
    if written != fused_qkv:
        raise ConfigError(f"model.fused_qkv={str(fused_qkv).lower()}: {checkpoint} was written with "
                          f"fused_qkv={str(written).lower()}; resume with the same setting (or start a new run.dir "
                          "from its export, model.pretrained=.../final/transformer)")


class RunState:
    """Step counter, per-rank generator and NaN guard of a run, saved and restored with its checkpoints.

    ``replicated`` (optional) returns state that every rank holds alike outside DeepSpeed (the VAE's
    discriminator); ``resume`` hands it back to ``restore_replicated``.
    """

    def __init__(self, cfg, dist: DistInfo, loader, engine, ema=None,
                 replicated: Optional[Callable[[], dict[str, Any]]] = None,
                 restore_replicated: Optional[Callable[[dict[str, Any]], None]] = None,
                 stream_rank: Optional[int] = None, meta: Optional[dict[str, Any]] = None):
        self.cfg, self.dist, self.loader, self.engine, self.ema = cfg, dist, loader, engine, ema
        self.replicated, self.restore_replicated = replicated, restore_replicated
        self.checkpoints = checkpoint_manager(cfg, dist)
        self.guard = NonfiniteGuard(cfg.train.max_nonfinite_in_row)
        # noise, timesteps, posterior samples differ per sample stream, reproducibly: ``stream_rank`` is the
        # data-parallel rank (the ranks of a sequence-parallel group read one stream and must draw alike),
        # this rank by default
        stream = dist.rank if stream_rank is None else stream_rank
        self.generator = torch.Generator().manual_seed(cfg.run.seed * 100_003 + stream)
        self.meta = {"zero_stage": cfg.parallel.zero_stage, **(meta or {})}  # into trainer.json
        self.step = 0

    def resume(self) -> None:
        """Restore the newest complete checkpoint of ``run.dir``, if any (and ``checkpoint.resume``)."""
        latest = resume_point(self.cfg, self.dist)
        if latest is None:
            return
        meta, rank_state = self.checkpoints.load(latest, self.engine, self.ema)
        self.step = meta["step"]
        self.guard.skipped = rank_state.get("skipped_nonfinite", 0)  # absent in checkpoints from before the guard
        self.loader.load_state_dict(rank_state["data"])
        self.generator.set_state(rank_state["rng"]["generator"])
        torch.set_rng_state(rank_state["rng"]["torch"])
        if self.restore_replicated is not None:
            self.restore_replicated(self.checkpoints.load_replicated(latest))
        log.info("resumed from %s (step %d, written by %d ranks)", latest, self.step, meta["world_size"])

    def save(self) -> None:
        """Collective: a complete checkpoint of the current step."""
        rank_state = {"data": self.loader.state_dict(), "skipped_nonfinite": self.guard.skipped,
                      "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}}
        replicated = self.replicated() if self.replicated is not None else None
        self.checkpoints.save(self.step, self.engine, rank_state, self.ema, self.meta, replicated=replicated)
