"""The DiT training loop, single process, on synthetic latents (the debug-size smoke run).

    batch -> caption dropout -> objective.loss(model, latents, text) -> backward (x grad accumulation)
          -> clip grad norm -> AdamW step -> lr schedule -> metrics.jsonl / W&B

DeepSpeed ZeRO, multi-process launch, shard streaming and resumable checkpoints build on this loop
in the trainer issue; until then anything that needs them is refused with a clear error rather
than silently run differently.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from allegro_train.config import ConfigError, TrainConfig
from allegro_train.config.schema import dit_config_for
from allegro_train.data import SyntheticLatents, latent_shape
from allegro_train.diffusion import DDPMSchedule, DiffusionObjective, drop_captions, resolution_dependent_shift
from allegro_train.models.dit import AllegroDiT, dit_train_flops
from allegro_train.training.metrics import MetricsLogger
from allegro_train.training.optim import build_optimizer, lr_multiplier

log = logging.getLogger(__name__)


def build_dit(model_cfg) -> AllegroDiT:
    """A DiT from the registry (freshly ``init_weights()``-ed) or from released diffusers weights."""
    config = dit_config_for(model_cfg)
    if model_cfg.pretrained:
        model = AllegroDiT.from_pretrained(model_cfg.pretrained, torch_dtype=torch.float32,
                                           attention_backend=str(model_cfg.attention_backend))
        # RoPE scales are not weights: the stage's values apply to the loaded architecture
        rope = {k: v for k, v in dataclasses.asdict(config).items() if k.startswith("interpolation_scale")}
        model.config = dataclasses.replace(model.config, **rope)
    else:
        model = AllegroDiT(config, attention_backend=str(model_cfg.attention_backend))
        model.init_weights()
    model.set_activation_checkpointing(model_cfg.activation_checkpointing)
    return model


def build_objective(diffusion_cfg, num_tokens: int) -> DiffusionObjective:
    d = diffusion_cfg
    schedule = DDPMSchedule(d.num_train_timesteps, d.beta_start, d.beta_end, str(d.beta_schedule))
    flow_shift = d.flow_shift if d.flow_shift is not None else resolution_dependent_shift(num_tokens)
    return DiffusionObjective(kind=str(d.objective), schedule=schedule, min_snr_gamma=d.min_snr_gamma,
                              offset_noise=d.offset_noise, flow_logit_mean=d.flow_logit_mean,
                              flow_logit_std=d.flow_logit_std, flow_shift=flow_shift)


def _refuse_unsupported(cfg: TrainConfig) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("this trainer runs one process; multi-process DeepSpeed training is not built yet")
    if cfg.data.shards:
        raise ConfigError(f"data.shards={list(cfg.data.shards)}: streaming from shards is not built yet; "
                          "leave data.shards empty for synthetic data")
    if cfg.parallel.offload_optimizer or cfg.parallel.offload_params or cfg.parallel.sequence_parallel > 1:
        raise ConfigError("parallel.offload_* and parallel.sequence_parallel need the DeepSpeed trainer, not built yet")
    if str(cfg.parallel.precision) == "fp16":
        raise ConfigError("parallel.precision='fp16' is not supported; use bf16 or fp32")


def save_transformer(model: AllegroDiT, folder: Path) -> None:
    """diffusers ``transformer/`` folder, written beside and renamed into place when complete."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train for ``train.max_steps`` optimizer steps; returns a summary (first/last loss, paths)."""
    _refuse_unsupported(cfg)
    torch.manual_seed(cfg.run.seed)
    run_dir = Path(cfg.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    model = build_dit(cfg.model)
    dit = model.config
    # One synthetic source per bucket; steps take buckets in turn (a batch never mixes buckets).
    grids = [latent_shape(b.frames, b.height, b.width, cfg.data.vae_temporal_compression,
                          cfg.data.vae_spatial_compression) for b in cfg.data.buckets]
    datasets = [SyntheticLatents(grid, dit.in_channels, cfg.data.text_len, dit.caption_channels, seed=cfg.run.seed)
                for grid in grids]
    null_states, null_mask = datasets[0].null_caption()
    # one objective for all buckets: the flow shift (if any) is chosen for the largest bucket
    tokens = max(t * (h // dit.patch_size) * (w // dit.patch_size) for t, h, w in grids)
    objective = build_objective(cfg.diffusion, tokens)
    optimizer = build_optimizer(model, cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay, cfg.optim.eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, cfg.optim.warmup_steps, str(cfg.optim.lr_schedule), cfg.train.max_steps))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if str(cfg.parallel.precision) == "bf16" else nullcontext()
    generator = torch.Generator().manual_seed(cfg.run.seed + 1)
    step_flops = [dit_train_flops(dit, grid, cfg.data.text_len, cfg.data.batch_size) * cfg.optim.grad_accum_steps
                  for grid in grids]

    logger = MetricsLogger(run_dir, str(cfg.logging.wandb_mode), cfg.logging.wandb_project,
                           cfg.logging.wandb_entity, cfg.run.name,
                           OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    log.info("training %s (%.1fM parameters) on synthetic latents %s, %d steps, run dir %s", cfg.model.name,
             sum(p.numel() for p in model.parameters()) / 1e6, ", ".join("x".join(map(str, g)) for g in grids),
             cfg.train.max_steps, run_dir)
    losses: list[float] = []
    sample_index = 0
    model.train()
    for step in tqdm(range(cfg.train.max_steps), desc="train", disable=None):
        start = time.perf_counter()
        step_loss = 0.0
        bucket = step % len(datasets)
        for _ in range(cfg.optim.grad_accum_steps):
            batch = datasets[bucket].batch(sample_index, cfg.data.batch_size)
            sample_index += cfg.data.batch_size
            text, mask = drop_captions(batch["text_states"], batch["text_mask"], null_states, null_mask,
                                       cfg.diffusion.caption_dropout, generator)
            with autocast:
                out = objective.loss(model, batch["latents"], {"text_states": text, "text_mask": mask}, generator)
            # average, not sum, over micro-batches so the lr means the same at any accumulation
            (out.loss / cfg.optim.grad_accum_steps).backward()
            step_loss += out.loss.item() / cfg.optim.grad_accum_steps
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(grad_norm):
            raise FloatingPointError(f"step {step}: gradient norm is {grad_norm}; loss {step_loss}")
        losses.append(step_loss)
        seconds = time.perf_counter() - start
        if (step + 1) % cfg.logging.every_steps == 0 or step + 1 == cfg.train.max_steps:
            logger.log(step + 1, {"loss": step_loss, "grad_norm": float(grad_norm), "lr": schedule.get_last_lr()[0],
                                  "step_seconds": seconds, "model_tflops": step_flops[bucket] / seconds / 1e12,
                                  "bucket": bucket})
    logger.close()

    final = run_dir / "final" / "transformer"
    final.parent.mkdir(exist_ok=True)
    save_transformer(model, final)
    window = max(1, len(losses) // 5)
    summary = {"steps": len(losses), "first_loss": sum(losses[:window]) / window,
               "last_loss": sum(losses[-window:]) / window, "transformer": str(final), "metrics": str(logger.path)}
    log.info("done: mean loss of the first %d steps %.4f -> last %d steps %.4f; weights in %s",
             window, summary["first_loss"], window, summary["last_loss"], final)
    return summary
