"""Training checkpoints: ``run.dir/checkpoints/step_N/``, complete or absent.

    step_000100/
      deepspeed/            model, optimizer and LR-schedule states (DeepSpeed, sharded by ZeRO)
      rank_00000.pt ...     each rank's data-loader position and RNG states
      ema.pt | ema_rank_*   EMA weights (one file under ZeRO 0-2, a partition per rank under ZeRO-3)
      trainer.json          step, world size, ZeRO stage: written last

Everything is written into ``.step_N.tmp/`` and renamed by rank 0 once every rank has finished, so
a crash (even ``kill -9``) mid-write leaves the previous checkpoints as they were; the leftover
temporary folder is ignored and removed by the next save. Per-rank files hold tensors, ints and
lists only and are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import torch

from allegro_train.config import ConfigError
from allegro_train.parallel.distributed import DistInfo, barrier

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d+)$")
# Fault injection for tests: SIGKILL this process mid-write of the checkpoint at this step.
CRASH_ENV = "ALLEGRO_TRAIN_KILL_DURING_CHECKPOINT"


def _maybe_inject_crash(step: int) -> None:
    if os.environ.get(CRASH_ENV) == str(step):
        log.warning("%s=%d: killing this process mid-checkpoint", CRASH_ENV, step)
        os.kill(os.getpid(), signal.SIGKILL)


class CheckpointManager:
    def __init__(self, root: str | os.PathLike, keep_last: int, dist: DistInfo):
        self.root, self.keep_last, self.dist = Path(root), keep_last, dist

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _STEP_DIR.match(p.name) and (p / "trainer.json").is_file()]
        return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))

    def latest(self) -> Path | None:
        complete = self.complete()
        return complete[-1] if complete else None

    def save(self, step: int, engine, rank_state: dict[str, Any], ema, meta: dict[str, Any]) -> Path:
        """Collective: every rank calls it. Returns the final folder."""
        final = self.root / f"step_{step:09d}"
        tmp = self.root / f".step_{step:09d}.tmp"
        if self.dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        engine.save_checkpoint(str(tmp), tag="deepspeed", save_latest=False)
        torch.save(rank_state, tmp / f"rank_{self.dist.rank:05d}.pt")
        if ema is not None and (ema.zero3 or self.dist.is_main):
            name = f"ema_rank_{self.dist.rank:05d}.pt" if ema.zero3 else "ema.pt"
            torch.save(ema.state_dict(), tmp / name)
        _maybe_inject_crash(step)
        barrier()
        if self.dist.is_main:
            meta = {"step": step, "world_size": self.dist.world_size, **meta}
            (tmp / "trainer.json").write_text(json.dumps(meta, indent=2) + "\n")
            if final.exists():  # re-saving a step (e.g. after a relaunch): replace it whole
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune()
        barrier()
        log.info("checkpoint saved: %s", final)
        return final

    def load(self, folder: Path, engine, ema) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restore engine (+ EMA) from ``folder``; returns (trainer meta, this rank's state)."""
        meta = json.loads((folder / "trainer.json").read_text())
        engine.load_checkpoint(str(folder), tag="deepspeed", load_optimizer_states=True,
                               load_lr_scheduler_states=True, load_module_strict=True)
        if ema is not None:
            name = f"ema_rank_{self.dist.rank:05d}.pt" if ema.zero3 else "ema.pt"
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name}: the run has EMA on (optim.ema_decay) but the "
                                        "checkpoint has no EMA state")
            ema.load_state_dict(torch.load(folder / name, weights_only=True))
        rank_file = folder / f"rank_{self.dist.rank:05d}.pt"
        if not rank_file.is_file():  # more ranks than the checkpoint had: start from rank 0's position
            rank_file = folder / "rank_00000.pt"
        return meta, torch.load(rank_file, weights_only=True)

    def _prune(self) -> None:
        for stale in self.root.glob(".step_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        for old in self.complete()[: -self.keep_last]:
            shutil.rmtree(old)


def check_resume_fused_qkv(folder: Path, fused_qkv: bool) -> None:
    """Refuse to resume under another ``model.fused_qkv``, before anything is loaded: the model's
    weights load either way (diffusers keys), but the optimizer and EMA states are per parameter
    and fusing changes the parameters. Checkpoints from before the option were unfused."""
    written = json.loads((folder / "trainer.json").read_text()).get("fused_qkv", False)
    if written != fused_qkv:
        raise ConfigError(f"model.fused_qkv={str(fused_qkv).lower()}: {folder} was written with "
                         f"fused_qkv={str(written).lower()}; resume with the same setting (or start a new run.dir "
                         "from its export, model.pretrained=.../final/transformer)")
