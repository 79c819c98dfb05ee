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
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from allegro_train.config import ConfigError, TrainConfig
from allegro_train.config.schema import dit_config_for
from allegro_train.data import build_loader, latent_shape, write_synthetic_shards
from allegro_train.diffusion import DDPMSchedule, DiffusionObjective, drop_captions, resolution_dependent_shift
from allegro_train.models.dit import AllegroDiT, AllegroTI2VDiT, dit_train_flops, ti2v_from_t2v, transformer_class
from allegro_train.models.dit.attention import split_qkv_keys
from allegro_train.parallel.distributed import DistInfo, all_reduce_sum, barrier
from allegro_train.parallel.groups import SequenceGroups, build_sequence_groups, check_resume_layout
from allegro_train.parallel.ulysses import apply_sequence_parallel
from allegro_train.training.conditioning import build_conditioner, with_condition
from allegro_train.training.ema import EMA, full_module_state_dict
from allegro_train.training.faults import FaultHandlers, maybe_inject_faults
from allegro_train.training.inputs import OnlineInputs, PrecomputedInputs
from allegro_train.training.lora import apply_lora, merged_state_dict, save_adapters
from allegro_train.training.metrics import StepStats
from allegro_train.training.run import (build_engine, build_logger, checkpoint_due, compute_dtype, export_folder,
                                        loader_counts, logging_due, max_memory_gb, prepare_run_dir, run_guarded,
                                        summarize, unclipped_grad_norm)
from allegro_train.training.state import RunState, check_resume_fused_qkv, resume_point
from allegro_train.training.validation import Validator

log = logging.getLogger(__name__)


def build_dit(model_cfg, sequence_group=None, ti2v: bool = False) -> AllegroDiT:
    """A DiT from the registry (freshly ``init_weights()``-ed) or from released diffusers weights;
    q/k/v fused if asked, tokens split over ``sequence_group`` (Ulysses) when given, then
    checkpointing, compilation and LoRA.

    ``ti2v``: the image-to-video variant; a T2V ``model.pretrained`` is converted on load (exactly the
    T2V model until the condition embeddings train), as the released ``train_ti2v.py`` starts.
    """
    config = dit_config_for(model_cfg)
    if model_cfg.pretrained:
        loaded_cls = transformer_class(model_cfg.pretrained)
        if loaded_cls is AllegroTI2VDiT and not ti2v:
            raise ConfigError(f"model.pretrained={model_cfg.pretrained} is a TI2V transformer: set ti2v.enabled=true")
        model = loaded_cls.from_pretrained(model_cfg.pretrained, torch_dtype=torch.float32,
                                           attention_backend=str(model_cfg.attention_backend))
        if ti2v and loaded_cls is AllegroDiT:
            model = ti2v_from_t2v(model)
        # RoPE scales are not weights: the stage's values apply to the loaded architecture
        rope = {k: v for k, v in dataclasses.asdict(config).items() if k.startswith("interpolation_scale")}
        model.config = dataclasses.replace(model.config, **rope)
    else:
        model = (AllegroTI2VDiT if ti2v else AllegroDiT)(config, attention_backend=str(model_cfg.attention_backend))
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


def export_transformer(state: dict[str, torch.Tensor], config, folder: Path,
                       model_cls: type[AllegroDiT] = AllegroDiT) -> None:
    """A diffusers ``transformer/`` folder, written beside and renamed into place when complete."""
    with torch.device("meta"):
        model = model_cls(config)
    model.load_state_dict(state, assign=True)
    export_folder(folder, model.save_pretrained)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train to ``train.max_steps`` optimizer steps; returns a summary (losses, paths) on every rank."""
    return run_guarded(cfg, _train)


def _train(cfg: TrainConfig, dist: DistInfo, faults: FaultHandlers) -> dict[str, Any]:
    run_dir = prepare_run_dir(cfg, dist)
    sp = build_sequence_groups(cfg.parallel.sequence_parallel, dist)
    latest = resume_point(cfg, dist)
    if latest is not None:  # before the model is built
        check_resume_layout(latest, sp)
        check_resume_fused_qkv(latest, cfg.model.fused_qkv)
    torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
    model = build_dit(cfg.model, sp.group, cfg.ti2v.enabled)
    dit = model.config
    loader, inputs = build_data(cfg, dit, dist, sp, run_dir)
    buckets = [(b.frames, b.height, b.width) for b in cfg.data.buckets]
    objective = build_objective(cfg.diffusion, max(tokens_of(dit, b, cfg.data)[1] for b in buckets))
    max_steps = cfg.train.max_steps
    engine, scheduler = build_engine(model, cfg)
    dtype = compute_dtype(cfg)
    ema = EMA(engine.module, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
    # noise, timesteps and caption dropout differ per data-parallel rank, reproducibly, and agree
    # within a sequence-parallel group
    run_state = RunState(cfg, dist, loader, engine, ema, stream_rank=sp.dp_rank,
                         meta={"sequence_parallel": sp.size, "fused_qkv": cfg.model.fused_qkv})
    run_state.resume()
    step, guard, generator = run_state.step, run_state.guard, run_state.generator

    logger = build_logger(cfg, dist, run_dir, resume_step=step)
    validator = None
    if cfg.validation.every_steps:
        validator = Validator(cfg, dist.device, run_dir, dist.is_main,
                              encoders=inputs if isinstance(inputs, OnlineInputs) else None)
    stats = StepStats(cfg.diffusion.num_train_timesteps)
    conditioner = build_conditioner(cfg.ti2v)  # None unless ti2v.enabled
    flow = str(cfg.diffusion.objective) == "flow"
    accum = cfg.optim.grad_accum_steps
    if dist.is_main:
        log.info("training %s (%.1fM parameters), ZeRO-%d on %d rank(s) (sequence parallel %d), steps %d -> %d, "
                 "run dir %s", cfg.model.name, sum(p.numel() for p in model.parameters()) / 1e6,
                 cfg.parallel.zero_stage, dist.world_size, sp.size, step, max_steps, run_dir)

    def model_fn(noisy, timesteps, text_states, text_mask, condition=None):
        return engine(with_condition(noisy, condition).to(dtype), timesteps, text_states.to(dtype), text_mask)

    def save_checkpoint() -> None:
        run_state.step = step
        run_state.save()

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
            cond = {"text_states": text.to(dist.device), "text_mask": mask.to(dist.device)}
            if conditioner is not None:  # TI2V: this batch's tasks -> masked-clip latents + mask
                cond["condition"] = conditioner(batch, latents, inputs, generator)
            out = objective.loss(model_fn, latents, cond, generator)
            micro_loss = maybe_inject_faults(out.loss, dist.rank, step + guard.skipped + 1)
            if not guard.micro_batch_ok(micro_loss, micro, step):  # agreed by all ranks, before any backward
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
            if faults.after_skip(save_checkpoint):
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
        if logging_due(cfg, step):
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
        if faults.after_step(save_checkpoint, checkpoint_due(cfg, step)):
            break
    progress.close()
    logger.close()
    faults.stop_watchdog()  # the export below runs on rank 0 alone while the others wait
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
        export_transformer(state, dit, final, AllegroTI2VDiT if cfg.ti2v.enabled else AllegroDiT)
    summary = summarize(step, losses, logger, transformer=str(final))
    if dist.is_main and losses:
        log.info("done at step %d: mean loss %.4f (first fifth of this launch) -> %.4f (last fifth); weights in %s",
                 step, summary["first_loss"], summary["last_loss"], final)
    return summary
