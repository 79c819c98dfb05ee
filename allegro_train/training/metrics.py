"""Metrics to ``run.dir/metrics.jsonl`` (always) and to Weights & Biases (offline by default)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLogger:
    def __init__(self, run_dir: str | os.PathLike, wandb_mode: str, project: str, entity: str | None,
                 run_name: str, config: dict[str, Any]):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")
        self.wandb_run = None
        if wandb_mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(mode=wandb_mode, project=project, entity=entity, name=run_name,
                                        dir=str(run_dir), config=config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def close(self) -> None:
        self._file.close()
        if self.wandb_run is not None:
            run_dir = self.wandb_run.dir
            self.wandb_run.finish()
            if self.wandb_run.settings.mode == "offline":
                log.info("W&B run saved offline; to upload it: wandb sync %s", Path(run_dir).parent)
