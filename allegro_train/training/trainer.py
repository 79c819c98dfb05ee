"""The DiT trainer: DeepSpeed ZeRO on one process, one node or many; exact resume.

    batch -> caption dropout -> objective.loss(engine, latents, text) -> engine.backward / engine.step
          (ZeRO reduces, clips, accumulates, steps AdamW and the LR schedule) -> EMA
          -> metrics.jsonl / W&B -> checkpoints/step_N (atomic) -> final/transformer (diffusers)

Faults (training/faults.py): a step whose loss is NaN/inf on any rank is skipped on all of them
before backward; SIGTERM checkpoints after the current step and returns; the optional watchdog
ends a rank whose steps stop completing, after dumping its stacks.

Relaunching with the same ``run.dir`` resumes from the newest complete checkpoint and continues
exactly (model, optimizer, LR schedule, EMA, loader position, every rank's RNG), up to
``train.max_steps``, also when that was raised.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from allegro_train.config import TrainConfig
from allegro_train.config.schema import dit_config_for
from allegro_train.data import build_loader, latent_shape, write_synthetic_shards
from allegro_train.diffusion import DDPMSchedule, DiffusionObjective, drop_captions, resolution_dependent_shift
from allegro_train.models.dit import AllegroDiT, dit_train_flops
from allegro_train.models.dit.attention import split_qkv_keys
from allegro_train.parallel.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from allegro_train.parallel.groups import SequenceGroups, build_sequence_groups, check_resume_layout
from allegro_train.parallel.ulysses import apply_sequence_parallel
from allegro_train.parallel.zero import deepspeed_config
from allegro_train.training.checkpoint import CheckpointManager, check_resume_fused_qkv
from allegro_train.training.ema import EMA, full_module_state_dict
from allegro_train.training.faults import (NonfiniteGuard, NonfiniteLossError, Preemption, Watchdog,
                                           maybe_inject_faults)
from allegro_train.training.inputs import OnlineInputs, PrecomputedInputs
from allegro_train.training.lora import apply_lora, merged_state_dict, save_adapters
from allegro_train.training.metrics import MetricsLogger, StepStats
from allegro_train.training.validation import Validator
from allegro_train.training.optim import lr_multiplier, param_groups

log = logging.getLogger(__name__)


def build_dit(model_cfg, sequence_group=None) -> AllegroDiT:
    """A DiT from the registry (freshly ``init_weights()``-ed) or from released diffusers weights;
    q/k/v fused if asked, tokens split over ``sequence_group`` (Ulysses) when given, then
    checkpointing, compilation and LoRA."""
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
    if model_cfg.fused_qkv:  # the state dict keeps diffusers' keys: checkpoints and exports are unchanged
        model.fuse_qkv()
    if sequence_group is not None:
        apply_sequence_parallel(model, sequence_group)
    model.set_activation_checkpointing(model_cfg.activation_checkpointing)
    if model_cfg.compile:
        model.compile_blocks()
    if model_cfg.lora_rank:
        model = apply_lora(model, model_cfg.lora_rank, lora_alpha(model_cfg), list(model_cfg.lora_targets))
    return model


def lora_alpha(model_cfg) -> float:
    return model_cfg.lora_alpha if model_cfg.lora_alpha is not None else float(model_cfg.lora_rank)


def build_objective(diffusion_cfg, num_tokens: int) -> DiffusionObjective:
    d = diffusion_cfg
    schedule = DDPMSchedule(d.num_train_timesteps, d.beta_start, d.beta_end, str(d.beta_schedule))
    flow_shift = d.flow_shift if d.flow_shift is not None else resolution_dependent_shift(num_tokens)
    return DiffusionObjective(kind=str(d.objective), schedule=schedule, min_snr_gamma=d.min_snr_gamma,
                              offset_noise=d.offset_noise, flow_logit_mean=d.flow_logit_mean,
                              flow_logit_std=d.flow_logit_std, flow_shift=flow_shift)


def build_data(cfg: TrainConfig, dit, dist: DistInfo, sp: SequenceGroups, run_dir: Path):
    """This rank's shard loader and the inputs step that turns its batches into DiT inputs.

    The loader reads the stream of this rank's data-parallel rank: every rank of a sequence-parallel
    group gets the same batches.

    Without ``data.shards`` (debug runs, the demo) a synthetic precomputed shard set is written
    once into ``run.dir/synthetic_shards`` and read through the same loader.
    """
    data_cfg = cfg.data
    if not data_cfg.shards:
        folder = run_dir / "synthetic_shards"
        buckets = [(b.frames, b.height, b.width) for b in data_cfg.buckets]
        # Rank 0 writes; the others, after the barrier, find the folder complete and get the same
        # paths (the shard count is part of them, so every rank must pass the same arguments).
        write = lambda: write_synthetic_shards(  # noqa: E731
            folder, buckets, dit.caption_channels, data_cfg.text_len, dit.in_channels,
            num_shards=max(4, sp.dp_size * max(data_cfg.num_workers, 1)),
            latent_scaling_factor=data_cfg.latent_scaling_factor, temporal=data_cfg.vae_temporal_compression,
            spatial=data_cfg.vae_spatial_compression, seed=cfg.run.seed)
        if dist.is_main:
            write()
        barrier()
        pattern, null_path = write()
        data_cfg = OmegaConf.merge(data_cfg, {"shards": [pattern], "null_caption": null_path, "precomputed": True})
    inputs = (PrecomputedInputs(data_cfg.null_caption) if data_cfg.precomputed
              else OnlineInputs(cfg.model, dist.device))
    return build_loader(data_cfg, rank=sp.dp_rank, world_size=sp.dp_size, seed=cfg.run.seed), inputs


def pad_text(states: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad text states [B, L, D] and mask [B, L] to at least ``length`` tokens."""
    extra = length - states.shape[1]
    if extra <= 0:
        return states, mask
    return torch.nn.functional.pad(states, (0, 0, 0, extra)), torch.nn.functional.pad(mask, (0, extra))


def tokens_of(dit, bucket, data_cfg) -> tuple[tuple[int, int, int], int]:
    grid = latent_shape(*bucket, data_cfg.vae_temporal_compression, data_cfg.vae_spatial_compression)
    return grid, grid[0] * (grid[1] // dit.patch_size) * (grid[2] // dit.patch_size)


def export_transformer(state: dict[str, torch.Tensor], config, folder: Path) -> None:
    """A diffusers ``transformer/`` folder, written beside and renamed into place when complete."""
    with torch.device("meta"):
        model = AllegroDiT(config)
    model.load_state_dict(state, assign=True)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


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


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train to ``train.max_steps`` optimizer steps; returns a summary (losses, paths) on every rank."""
    dist = init_distributed()
    preemption = Preemption()
    watchdog = None
    if cfg.train.watchdog_seconds is not None:  # started now: the first deadline covers the build too
        watchdog = Watchdog(cfg.train.watchdog_seconds, Path(cfg.run.dir) / f"hang_rank_{dist.rank}.txt",
                            cfg.train.watchdog_first_grace)
    try:
        return _train(cfg, dist, preemption, watchdog)
    finally:
        if watchdog is not None:
            watchdog.stop()
        preemption.restore()
        shutdown()


def _train(cfg: TrainConfig, dist: DistInfo, preemption: Preemption, watchdog: Watchdog | None) -> dict[str, Any]:
    import deepspeed

    run_dir = Path(cfg.run.dir)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    sp = build_sequence_groups(cfg.parallel.sequence_parallel, dist)
    checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.checkpoint.keep_last, dist)
    latest = checkpoints.latest() if cfg.checkpoint.resume else None
    if latest is not None:  # before the model is built
        check_resume_layout(latest, sp)
        check_resume_fused_qkv(latest, cfg.model.fused_qkv)
    torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
    model = build_dit(cfg.model, sp.group)
    dit = model.config
    loader, inputs = build_data(cfg, dit, dist, sp, run_dir)
    buckets = [(b.frames, b.height, b.width) for b in cfg.data.buckets]
    objective = build_objective(cfg.diffusion, max(tokens_of(dit, b, cfg.data)[1] for b in buckets))
    max_steps = cfg.train.max_steps
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, cfg.optim.weight_decay), config=deepspeed_config(cfg),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_multiplier(s, cfg.optim.warmup_steps, str(cfg.optim.lr_schedule), max_steps)))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(cfg.parallel.precision), torch.float32)
    ema = EMA(engine.module, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
    # noise, timesteps and caption dropout differ per data-parallel rank, reproducibly, and agree
    # within a sequence-parallel group
    generator = torch.Generator().manual_seed(cfg.run.seed * 100_003 + sp.dp_rank)

    step = 0
    guard = NonfiniteGuard(cfg.train.max_nonfinite_in_row)
    if latest is not None:
        meta, rank_state = checkpoints.load(latest, engine, ema)
        step = meta["step"]
        guard.skipped = rank_state.get("skipped_nonfinite", 0)  # absent in checkpoints from before the guard
        loader.load_state_dict(rank_state["data"])
        generator.set_state(rank_state["rng"]["generator"])
        torch.set_rng_state(rank_state["rng"]["torch"])
        log.info("resumed from %s (step %d, written by %d ranks)", latest, step, meta["world_size"])

    logger = MetricsLogger(run_dir, dist.is_main, str(cfg.logging.wandb_mode), cfg.logging.wandb_project,
                           cfg.logging.wandb_entity, cfg.run.name,
                           OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), resume_step=step)
    validator = None
    if cfg.validation.every_steps:
        validator = Validator(cfg, dist.device, run_dir, dist.is_main,
                              encoders=inputs if isinstance(inputs, OnlineInputs) else None)
    stats = StepStats(cfg.diffusion.num_train_timesteps)
    flow = str(cfg.diffusion.objective) == "flow"
    accum = cfg.optim.grad_accum_steps
    if dist.is_main:
        log.info("training %s (%.1fM parameters), ZeRO-%d on %d rank(s) (sequence parallel %d), steps %d -> %d, "
                 "run dir %s", cfg.model.name, sum(p.numel() for p in model.parameters()) / 1e6,
                 cfg.parallel.zero_stage, dist.world_size, sp.size, step, max_steps, run_dir)

    def model_fn(noisy, timesteps, text_states, text_mask):
        return engine(noisy.to(dtype), timesteps, text_states.to(dtype), text_mask)

    def save_checkpoint() -> None:
        rank_state = {"data": loader.state_dict(), "skipped_nonfinite": guard.skipped,
                      "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()}}
        checkpoints.save(step, engine, rank_state, ema, {"zero_stage": cfg.parallel.zero_stage,
                                                         "sequence_parallel": sp.size,
                                                         "fused_qkv": cfg.model.fused_qkv})

    losses: list[float] = []
    engine.train()
    batches = iter(loader)  # resumes from the loader's state; it never restarts an epoch on its own
    progress = tqdm(total=max_steps, initial=step, desc="train", disable=not dist.is_main or None)
    while step < max_steps:
        start = time.perf_counter()
        step_loss, step_flops, step_tokens, step_samples = 0.0, 0, 0, 0
        pre_step_norm = None
        lr = scheduler.get_last_lr()[0]  # the lr this step's update uses
        skipped = False
        for micro in range(accum):
            batch = next(batches)
            if skipped:  # a skipped step still consumes its batches, as a relaunch would
                continue
            grid, tokens = tokens_of(dit, batch["bucket"], cfg.data)
            latents, (text, mask) = inputs(batch, generator, dist.device)
            if inputs.null is not None:  # text and the empty caption padded to one length, then dropped
                length = max(text.shape[1], inputs.null[0].shape[1])
                text, mask = drop_captions(*pad_text(text, mask, length), *pad_text(*inputs.null, length),
                                           cfg.diffusion.caption_dropout, generator)
            out = objective.loss(model_fn, latents, {"text_states": text.to(dist.device),
                                                     "text_mask": mask.to(dist.device)}, generator)
            micro_loss = maybe_inject_faults(out.loss, dist.rank, step + guard.skipped + 1)
            if not guard.all_finite(micro_loss):  # agreed by all ranks, before any of them runs backward
                if micro > 0:
                    raise NonfiniteLossError(
                        f"non-finite loss in micro-batch {micro} of the step after {step}: the gradients of the "
                        "earlier micro-batches are already accumulated inside DeepSpeed, so the step cannot be "
                        "skipped (optim.grad_accum_steps > 1); the newest complete checkpoint is intact")
                skipped = True
                continue
            engine.backward(micro_loss)  # DeepSpeed divides by the accumulation steps
            if micro == accum - 1 and cfg.parallel.zero_stage == 0:
                pre_step_norm = unclipped_grad_norm(engine.module)  # ZeRO-0 clips without reporting it
            engine.step()  # steps the optimizer and LR schedule at the accumulation boundary only
            step_loss += out.loss.item() / accum
            step_flops += dit_train_flops(dit, grid, text.shape[1], len(latents))
            step_tokens += tokens * len(latents)
            step_samples += len(latents)
            t = out.timesteps.float() * (cfg.diffusion.num_train_timesteps if flow else 1)
            stats.add(out.per_sample, t, batch["bucket"])
        if skipped:  # no update and no checkpoint of this step; raises after K in a row
            guard.record_skip(step)
            if watchdog is not None:
                watchdog.beat()
            if preemption.requested():
                save_checkpoint()
                break
            continue
        guard.record_good()
        if ema is not None:
            ema.update()
        step += 1
        progress.update()
        totals = all_reduce_sum(torch.tensor([step_loss, step_flops, step_tokens, step_samples], dtype=torch.float64))
        loss = float(totals[0]) / dist.world_size
        flops, tokens_done, samples = (totals[1:] / sp.size).tolist()  # K ranks of an SP group share a batch
        losses.append(loss)
        seconds = time.perf_counter() - start
        if step % cfg.logging.every_steps == 0 or step == max_steps:
            grad_norm = pre_step_norm if pre_step_norm is not None else engine.get_global_grad_norm()
            logger.log(step, {
                "loss": loss, "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "lr": lr, "samples_per_s": samples / seconds, "tokens_per_s": tokens_done / seconds,
                "step_seconds": seconds,
                "mfu": flops / seconds / (dist.world_size * cfg.train.device_peak_tflops * 1e12),
                "max_mem_gb": max_memory_gb(dist.device), "skipped_nonfinite": guard.skipped,
                **stats.summary(all_reduce_sum), **loader_counts(loader)})
        if validator is not None and step % cfg.validation.every_steps == 0:
            logger.log_videos(step, validator.run(engine.module, step))
        preempted = preemption.requested()
        if preempted or step % cfg.checkpoint.every_steps == 0 or step == max_steps:
            save_checkpoint()
        if watchdog is not None:
            watchdog.beat()
        if preempted:
            break
    progress.close()
    logger.close()
    if watchdog is not None:
        watchdog.stop()  # the export below runs on rank 0 alone while the others wait
    if step < max_steps:  # SIGTERM: checkpointed above; the relaunch continues from it
        log.info("SIGTERM: checkpoint of step %d written, exiting for the relaunch", step)
        return {"steps": step, "preempted": True, "losses": losses, "metrics": str(logger.path)}

    # Export: the EMA weights when there are any (what one samples with), else the trained ones;
    # LoRA adapters merged into the base weights (and saved apart as well).
    state = full_module_state_dict(engine.module)
    if ema is not None:  # keyed by parameter name: fused q/k/v split into diffusers' keys
        state.update(split_qkv_keys(ema.full_state_dict()))
    final = run_dir / "final" / "transformer"
    if dist.is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        lora = cfg.model.lora_rank
        if lora:
            save_adapters(state, final.parent / "lora", lora, lora_alpha(cfg.model), list(cfg.model.lora_targets))
            state = merged_state_dict(state, lora, lora_alpha(cfg.model))
        export_transformer(state, dit, final)
    window = max(1, len(losses) // 5)
    summary = {"steps": step, "losses": losses, "first_loss": sum(losses[:window]) / window,
               "last_loss": sum(losses[-window:]) / window, "transformer": str(final),
               "metrics": str(logger.path)}
    if dist.is_main and losses:
        log.info("done at step %d: mean loss %.4f (first %d steps this launch) -> %.4f (last %d); weights in %s",
                 step, summary["first_loss"], window, summary["last_loss"], window, final)
    return summary
