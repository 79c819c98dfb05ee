"""Metrics to ``run.dir/metrics.jsonl`` (always) and to Weights & Biases (offline by default).

Only rank 0 writes. On resume from step N the file keeps records up to N and drops later ones
(steps the crashed run did past its last checkpoint), so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class StepStats:
    """Per-sample losses of a logging window, binned by timestep and by bucket; summed over ranks."""

    def __init__(self, num_timesteps: int, bins: int = 10):
        self.bin_width = max(num_timesteps // bins, 1)
        self.bins = bins
        self.by_timestep = torch.zeros(2, bins, dtype=torch.float64)  # [sum, count]
        self.by_bucket: dict[str, list[float]] = {}

    def add(self, per_sample: torch.Tensor, timesteps: torch.Tensor, bucket: tuple[int, int, int]) -> None:
        """per_sample [B] losses at ``timesteps`` [B] in [0, num_timesteps) (flow t scaled by the caller)."""
        index = (timesteps.float() // self.bin_width).long().clamp(0, self.bins - 1)
        losses = per_sample.detach().double().cpu()
        self.by_timestep[0].index_add_(0, index.cpu(), losses)
        self.by_timestep[1].index_add_(0, index.cpu(), torch.ones_like(losses))
        key = "x".join(map(str, bucket))
        total = self.by_bucket.setdefault(key, [0.0, 0.0])
        total[0] += float(losses.sum())
        total[1] += len(losses)

    def summary(self, reduce) -> dict[str, float]:
        """Means per bin, after ``reduce`` (an all-reduce sum) over ranks; resets the window."""
        by_t = reduce(self.by_timestep.clone())
        out = {}
        for i in range(self.bins):
            if by_t[1, i] > 0:
                lo = i * self.bin_width
                out[f"loss_t/{lo:04d}-{lo + self.bin_width - 1:04d}"] = float(by_t[0, i] / by_t[1, i])
        for key, (total, count) in sorted(self.by_bucket.items()):
            summed = reduce(torch.tensor([total, count], dtype=torch.float64))
            out[f"loss_bucket/{key}"] = float(summed[0] / summed[1])
        self.by_timestep.zero_()
        self.by_bucket.clear()
        return out


class MetricsLogger:
    def __init__(self, run_dir: str | os.PathLike, enabled: bool, wandb_mode: str, project: str,
                 entity: str | None, run_name: str, config: dict[str, Any], resume_step: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb_run = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = open(self.path, "a")
        if wandb_mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(mode=wandb_mode, project=project, entity=entity, name=run_name,
                                        dir=str(run_dir), config=config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def log_videos(self, step: int, videos: list[tuple[Path, str]], key: str = "samples") -> None:
        """mp4 files (with their prompts) as W&B videos; the files themselves stay in run.dir."""
        if self.wandb_run is None or not videos:
            return
        import wandb

        self.wandb_run.log({key: [wandb.Video(str(path), caption=prompt, format="mp4") for path, prompt in videos]},
                           step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self.wandb_run is not None:
            run_dir = Path(self.wandb_run.dir).parent
            offline = self.wandb_run.settings.mode == "offline"
            self.wandb_run.finish()
            if offline:
                log.info("W&B run saved offline; to upload it: wandb sync %s", run_dir)
