"""The VideoVAE trainer: DeepSpeed ZeRO 0-2 on one process, one node or many; exact resume.

    raw batch (a clip, or an image as a still clip of 4 frames) -> engine(video): reconstruction,
    posterior -> VAELoss.generator (L1 + LPIPS + KL [+ adaptive x GAN]) -> engine.backward / step
    [-> discriminator hinge loss -> its own AdamW, gradients averaged over ranks]
    -> metrics.jsonl / W&B -> held-out PSNR / SSIM / mp4s -> checkpoints/step_N -> final/vae (diffusers)

The scaffolding (process group, faults, checkpoints, resume, metrics) is the DiT trainer's
(training/run.py, training/state.py). The discriminator is small and replicated: every rank holds
it whole, its state is saved once per checkpoint (``replicated.pt``) and restored on resume.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from allegro_train.config.vae_schema import VAETrainConfig
from allegro_train.data import build_loader
from allegro_train.models.lpips import LPIPS
from allegro_train.models.vae import VideoVAE, vae_config
from allegro_train.models.vae.discriminator import PatchDiscriminator3D
from allegro_train.models.vae.inflate import is_temporal_key
from allegro_train.parallel.distributed import DistInfo, all_reduce_sum, average_gradients
from allegro_train.training.ema import full_module_state_dict
from allegro_train.training.faults import FaultHandlers, maybe_inject_faults
from allegro_train.training.run import (build_engine, build_logger, checkpoint_due, compute_dtype, export_folder,
                                        loader_counts, logging_due, max_memory_gb, prepare_run_dir, run_guarded,
                                        summarize, unclipped_grad_norm)
from allegro_train.training.state import RunState
from allegro_train.training.vae_loss import LastLayerGrad, VAELoss
from allegro_train.training.vae_validation import ReconstructionValidator

log = logging.getLogger(__name__)


def build_vae(vae_cfg) -> VideoVAE:
    """From ``vae.pretrained``, else inflated from ``vae.image_vae``, else the registry size ``vae.name``
    (temporal layers at identity, as released); ``vae.trainable`` decides what gets gradients."""
    if vae_cfg.pretrained:
        model = VideoVAE.from_pretrained(vae_cfg.pretrained, torch_dtype=torch.float32)
    elif vae_cfg.image_vae:
        model = VideoVAE.from_image_vae(vae_cfg.image_vae)
    else:
        model = VideoVAE(vae_config(vae_cfg.name))
        model.init_temporal_identity()
    temporal_only = str(vae_cfg.trainable) == "temporal"
    for name, param in model.named_parameters():
        param.requires_grad_(is_temporal_key(name) or not temporal_only)
    model.set_activation_checkpointing(vae_cfg.activation_checkpointing)
    return model


def fp32_state_dict(module: torch.nn.Module, frozen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full fp32 weights: the optimizer's fp32 masters of the trained parameters (not their bf16 copies
    in the module), the untouched fp32 originals of the frozen ones. Collective under ZeRO 1-2."""
    from deepspeed.utils import safe_get_full_fp32_param

    state = {k: v.float() for k, v in full_module_state_dict(module).items()}
    for name, param in module.named_parameters():
        if param.requires_grad:
            master = safe_get_full_fp32_param(param)  # None without a separate master copy (fp32, ZeRO-0)
            state[name] = (master if master is not None else param).detach().float().cpu()
    state.update(frozen)
    return state


def export_vae(state: dict[str, torch.Tensor], config, folder: Path) -> None:
    """A diffusers ``vae/`` folder (AutoencoderKLAllegro), written beside and renamed into place."""
    with torch.device("meta"):
        model = VideoVAE(config)
    model.load_state_dict(state, assign=True)
    export_folder(folder, model.save_pretrained)


class Discriminator:
    """The 3D PatchGAN with its own AdamW; replicated on every rank (gradients averaged)."""

    def __init__(self, cfg, device: torch.device):
        d = cfg.discriminator
        self.net = PatchDiscriminator3D(d.channels, d.layers).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=d.lr or cfg.optim.lr, betas=tuple(d.betas),
                                           weight_decay=0.0)
        self.grad_clip = cfg.optim.grad_clip
        self.start_step = d.start_step

    def on(self, step: int) -> bool:
        """Whether the step after ``step`` completed steps trains with the GAN terms."""
        return step >= self.start_step

    def step(self) -> float:
        """Average gradients over ranks, clip, step; returns the pre-clip gradient norm."""
        average_gradients(self.net)
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


def train_vae(cfg: VAETrainConfig) -> dict[str, Any]:
    """Train to ``train.max_steps`` optimizer steps. Returns (on every rank) ``steps``, ``losses`` (this
    launch's), ``first_loss`` / ``last_loss`` (means of its first / last fifth), ``vae`` (the exported
    diffusers folder), ``metrics`` (the jsonl path), ``psnr`` / ``ssim`` (the last validation's, or None)."""
    return run_guarded(cfg, _train_vae)


def _train_vae(cfg: VAETrainConfig, dist: DistInfo, faults: FaultHandlers) -> dict[str, Any]:
    run_dir = prepare_run_dir(cfg, dist)
    torch.manual_seed(cfg.run.seed)  # the same initial weights (VAE and discriminator) on every rank
    model = build_vae(cfg.vae)
    config = model.config
    # kept apart: a bf16 engine casts the whole module, and these must be exported exactly as loaded
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    lpips = LPIPS.from_file(cfg.loss.lpips_path).to(dist.device) if cfg.loss.lpips > 0 else None
    disc = Discriminator(cfg, dist.device) if cfg.discriminator.enabled else None
    loss_fn = VAELoss(cfg.loss, cfg.discriminator, lpips, disc.net if disc else None)
    loader = build_loader(cfg.data, rank=dist.rank, world_size=dist.world_size, seed=cfg.run.seed)
    engine, scheduler = build_engine(model, cfg)
    dtype = compute_dtype(cfg)
    vae: VideoVAE = engine.module
    last_layer_grad = LastLayerGrad(vae) if disc is not None and cfg.discriminator.adaptive_weight else None
    run_state = RunState(cfg, dist, loader, engine, replicated=disc.state_dict if disc else None,
                         restore_replicated=disc.load_state_dict if disc else None)
    run_state.resume()
    step, guard, generator = run_state.step, run_state.guard, run_state.generator

    logger = build_logger(cfg, dist, run_dir, resume_step=step)
    validator = None
    if cfg.validation.every_steps:
        validator = ReconstructionValidator(cfg, dist.device, dtype, run_dir, dist.is_main)
    last_val: dict[str, Optional[float]] = {"val/psnr": None, "val/ssim": None}

    def validate() -> None:
        metrics, videos = validator.run(vae, step)
        last_val.update(metrics)
        logger.log(step, metrics)
        logger.log_videos(step, videos, key="reconstructions")

    if validator is not None and step == 0:
        validate()  # the starting point, for comparison
    accum = cfg.optim.grad_accum_steps
    if dist.is_main:
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("training the VideoVAE (%.1fM of %.1fM parameters, %s), ZeRO-%d on %d rank(s), steps %d -> %d, "
                 "run dir %s", trained / 1e6, sum(p.numel() for p in model.parameters()) / 1e6,
                 cfg.vae.trainable, cfg.parallel.zero_stage, dist.world_size, step, cfg.train.max_steps, run_dir)

    def save_checkpoint() -> None:
        run_state.step = step
        run_state.save()

    losses: list[float] = []
    engine.train()
    batches = iter(loader)  # resumes from the loader's state
    progress = tqdm(total=cfg.train.max_steps, initial=step, desc="train vae", disable=not dist.is_main or None)
    while step < cfg.train.max_steps:
        start = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        gan_on = disc is not None and disc.on(step)
        terms: dict[str, float] = defaultdict(float)
        samples, pre_step_norm, skipped = 0, None, False
        for micro in range(accum):
            batch = next(batches)
            if skipped:  # a skipped step still consumes its batches, as a relaunch would
                continue
            video = vae.as_clip(batch["video"]).to(dist.device)  # [B, 3, T, H, W] in [-1, 1], fp32
            recon, posterior = engine(video.to(dtype), sample_posterior=cfg.vae.sample_posterior, generator=generator)
            if disc is not None:
                disc.net.requires_grad_(False)  # the generator's GAN term trains the VAE only
            loss, step_terms = loss_fn.generator(video, recon, posterior, gan_on, last_layer_grad)
            d_loss = None
            if gan_on:
                disc.net.requires_grad_(True)
                d_loss, d_terms = loss_fn.discriminator_loss(video, recon)
                step_terms.update(d_terms)
            loss = maybe_inject_faults(loss, dist.rank, step + guard.skipped + 1)
            checked = loss.detach() + (d_loss.detach() if d_loss is not None else 0.0)
            if not guard.micro_batch_ok(checked, micro, step):  # agreed by all ranks, before any backward
                skipped = True
                continue
            engine.backward(loss)
            if micro == accum - 1 and cfg.parallel.zero_stage == 0:
                pre_step_norm = unclipped_grad_norm(vae)  # ZeRO-0 clips without reporting it
            engine.step()
            if d_loss is not None:
                (d_loss / accum).backward()
            for key, value in step_terms.items():
                terms[key] += float(value) / accum
            samples += len(video)
        if skipped:
            if disc is not None:
                disc.optimizer.zero_grad(set_to_none=True)
            guard.record_skip(step)
            if faults.after_skip(save_checkpoint):
                break
            continue
        guard.record_good()
        d_grad_norm = disc.step() if gan_on else None
        step += 1
        progress.update()
        keys = sorted(terms)
        totals = all_reduce_sum(torch.tensor([terms[k] for k in keys] + [samples], dtype=torch.float64))
        means = {k: float(v) / dist.world_size for k, v in zip(keys, totals[:-1])}
        losses.append(means["loss"])
        seconds = time.perf_counter() - start
        if logging_due(cfg, step):
            grad_norm = pre_step_norm if pre_step_norm is not None else engine.get_global_grad_norm()
            logger.log(step, {
                **means, "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "d_grad_norm": d_grad_norm, "lr": lr, "samples_per_s": float(totals[-1]) / seconds,
                "step_seconds": seconds, "max_mem_gb": max_memory_gb(dist.device), "skipped_nonfinite": guard.skipped,
                **loader_counts(loader)})
        if validator is not None and step % cfg.validation.every_steps == 0:
            validate()
        if faults.after_step(save_checkpoint, checkpoint_due(cfg, step)):
            break
    progress.close()
    if step < cfg.train.max_steps:  # SIGTERM: checkpointed above; the relaunch continues from it
        logger.close()
        log.info("SIGTERM: checkpoint of step %d written, exiting for the relaunch", step)
        return {**summarize(step, losses, logger), "preempted": True}

    state = fp32_state_dict(vae, frozen)  # collective
    logger.close()
    faults.stop_watchdog()  # the export below runs on rank 0 alone while the others wait
    final = run_dir / "final" / "vae"
    if dist.is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        export_vae(state, config, final)
    summary = summarize(step, losses, logger, vae=str(final), psnr=last_val["val/psnr"], ssim=last_val["val/ssim"])
    if dist.is_main and losses:
        log.info("done at step %d: mean loss %.4f (first fifth of this launch) -> %.4f (last fifth); weights in %s",
                 step, summary["first_loss"], summary["last_loss"], final)
    return summary
