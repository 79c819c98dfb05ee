"""What both trainers (DiT and VAE) do around their steps.

``run_guarded`` opens the process group and the fault handlers and always closes them;
``prepare_run_dir`` writes the resolved config; ``build_engine`` wraps a model in DeepSpeed with
the LR schedule; ``build_logger`` and ``summarize`` give every run the same metrics file and
summary; ``export_folder`` writes a diffusers folder beside its final place and renames it in
when complete.
"""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import OmegaConf

from allegro_train.parallel.distributed import DistInfo, init_distributed, shutdown
from allegro_train.parallel.zero import deepspeed_config
from allegro_train.training.faults import FaultHandlers
from allegro_train.training.metrics import MetricsLogger
from allegro_train.training.optim import lr_multiplier, param_groups


def run_guarded(cfg, body: Callable[[Any, DistInfo, FaultHandlers], dict[str, Any]]) -> dict[str, Any]:
    """``body(cfg, dist, faults)`` inside the process group, with SIGTERM caught and the watchdog on."""
    dist = init_distributed()
    faults = FaultHandlers(cfg.train, Path(cfg.run.dir) / f"hang_rank_{dist.rank}.txt")
    try:
        return body(cfg, dist, faults)
    finally:
        faults.close()
        shutdown()


def prepare_run_dir(cfg, dist: DistInfo) -> Path:
    """``run.dir`` with the resolved ``config.yaml`` (rank 0 writes)."""
    run_dir = Path(cfg.run.dir)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return run_dir


def build_engine(model: torch.nn.Module, cfg):
    """The DeepSpeed engine over ``model``'s trainable parameters (AdamW, ZeRO, precision from
    ``optim.*`` / ``parallel.*``) and its LR schedule: linear warmup, then constant or cosine."""
    import deepspeed

    optim, max_steps = cfg.optim, cfg.train.max_steps
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, optim.weight_decay), config=deepspeed_config(cfg),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_multiplier(s, optim.warmup_steps, str(optim.lr_schedule), max_steps)))
    return engine, scheduler


def compute_dtype(cfg) -> torch.dtype:
    """The dtype the engine's module runs in (``parallel.precision``); inputs are cast to it."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(cfg.parallel.precision), torch.float32)


def build_logger(cfg, dist: DistInfo, run_dir: Path, resume_step: int) -> MetricsLogger:
    return MetricsLogger(run_dir, dist.is_main, str(cfg.logging.wandb_mode), cfg.logging.wandb_project,
                         cfg.logging.wandb_entity, cfg.run.name,
                         OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), resume_step=resume_step)


def logging_due(cfg, step: int) -> bool:
    return step % cfg.logging.every_steps == 0 or step == cfg.train.max_steps


def checkpoint_due(cfg, step: int) -> bool:
    return step % cfg.checkpoint.every_steps == 0 or step == cfg.train.max_steps


def unclipped_grad_norm(module: torch.nn.Module) -> float:
    """Global L2 norm of the (already all-reduced) gradients of a replicated model."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def loader_counts(loader) -> dict[str, float]:
    """This rank's samples per bucket and rejects per reason so far (rank 0's are what gets logged)."""
    stats = loader.stats()
    counts = {f"data/bucket/{name}": n for name, n in stats["buckets"].items()}
    counts.update({f"data/rejected/{reason}": n for reason, n in stats["rejects"].items()})
    counts["data/epoch"] = stats["epoch"]
    return counts


def max_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # peak RSS on CPU


def summarize(step: int, losses: list[float], logger: MetricsLogger, **outputs: Any) -> dict[str, Any]:
    """The summary a trainer returns: steps, per-step losses of this launch, their first / last
    fifth's means (``first_loss``, ``last_loss``), the metrics file and ``outputs`` (paths)."""
    window = max(1, len(losses) // 5)
    return {"steps": step, "losses": losses, "first_loss": sum(losses[:window]) / window,
            "last_loss": sum(losses[-window:]) / window, "metrics": str(logger.path), **outputs}


def export_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into ``<folder>.tmp``, then swap it in for ``folder``: a crash mid-export leaves
    the previous export (or none), never a half-written folder under the final name."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
