"""What ``launch/sample.py`` and ``launch/export.py`` do with a validated config."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from allegro_train.models.dit import AllegroTI2VDiT, transformer_class
from allegro_train.sampling.components import resolve_components
from allegro_train.sampling.conditioning import Condition, read_clip, read_image, sample_windows
from allegro_train.sampling.config import ExportConfig, SampleConfig, SampleConfigError
from allegro_train.sampling.distributed import check_sequence_parallel, sequence_parallel_group
from allegro_train.sampling.export import export_pipeline
from allegro_train.sampling.prompts import read_prompts
from allegro_train.sampling.sampler import Sampler
from allegro_train.sampling.video import check_out_path, write_video

log = logging.getLogger(__name__)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def output_paths(out: str, count: int, numbered: bool) -> list[Path]:
    """``out`` itself for one prompt; ``stem_000.suffix``, ... for a prompts file."""
    path = check_out_path(out)
    if not numbered:
        return [path]
    return [path.with_name(f"{path.stem}_{i:03d}{path.suffix}") for i in range(count)]


def read_condition(cfg: SampleConfig) -> Condition | None:
    """The frames ``image=`` / ``last_image=`` / ``video=`` give, or None (text-to-video)."""
    if cfg.image is not None:
        last = read_image(cfg.last_image) if cfg.last_image is not None else None
        return Condition.from_images(read_image(cfg.image), last)
    if cfg.video is not None:
        return Condition.from_clip(read_clip(cfg.video), cfg.context_frames)
    return None


def check_transformer_kind(cfg: SampleConfig) -> None:
    """TI2V checkpoints need a condition and T2V ones take none; checked before any weight is read."""
    parts = resolve_components(cfg.checkpoint, cfg.vae, cfg.text_encoder)
    ti2v = transformer_class(parts.transformer) is AllegroTI2VDiT
    conditioned = cfg.image is not None or cfg.video is not None
    if ti2v and not conditioned:
        raise SampleConfigError(f"checkpoint={cfg.checkpoint}: a TI2V transformer; give image= (and last_image=) "
                                "or video=")
    if conditioned and not ti2v:
        raise SampleConfigError(f"image={cfg.image!r} / video={cfg.video!r}: checkpoint={cfg.checkpoint} is a T2V "
                                "transformer; image-to-video needs a TI2V one (docs/ti2v.md)")


def run_sample(cfg: SampleConfig) -> list[Path]:
    """Sample every prompt (one at a time, each from ``cfg.seed``) and write its video; returns the paths.

    With ``sequence_parallel=K`` (under torchrun, K ranks) every rank denoises with the DiT's tokens
    split over the group and rank 0 alone decodes and writes (``sampling/distributed.py``); chained
    TI2V windows (``windows > 1``) are decoded on every rank, since each window conditions the next.
    """
    prompts = read_prompts(cfg.prompts_file) if cfg.prompts_file is not None else [cfg.prompt]
    paths = output_paths(cfg.out, len(prompts), numbered=cfg.prompts_file is not None)
    check_transformer_kind(cfg)
    if cfg.sequence_parallel > 1:
        check_sequence_parallel(cfg.sequence_parallel, cfg.checkpoint, cfg.vae, cfg.text_encoder)
    condition = read_condition(cfg)
    kwargs = dict(negative_prompt=cfg.negative_prompt, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                  steps=cfg.steps, guidance=cfg.guidance, clean_caption=cfg.clean_caption)
    with sequence_parallel_group(cfg.sequence_parallel) as (info, group):
        device = cfg.device if info is None or info.device.type == "cpu" else info.device  # cuda:LOCAL_RANK
        sampler = Sampler.from_pretrained(cfg.checkpoint, vae=cfg.vae, text_encoder=cfg.text_encoder,
                                          scheduler=cfg.scheduler, device=device, dtype=DTYPES[str(cfg.dtype)],
                                          vae_tiling=cfg.vae_tiling, offload=cfg.offload, max_length=cfg.max_length)
        if group is not None:
            from allegro_train.parallel.ulysses import apply_sequence_parallel

            apply_sequence_parallel(sampler.transformer, group)
        writes = info is None or info.is_main
        for prompt, path in zip(prompts, paths):
            if cfg.windows > 1:  # each window's frames condition the next one: every rank decodes
                frames = sample_windows(sampler, prompt, condition, cfg.windows, cfg.context_frames, cfg.seed,
                                        **kwargs)
            else:
                latents = sampler.sample_latents([prompt], seed=cfg.seed, condition=condition, **kwargs)
                frames = sampler.decode(latents)[0] if writes else None  # [T, H, W, 3]
            if writes:
                write_video(frames, path, cfg.fps)
                log.info("wrote %s (%s)", path, prompt)
    return paths


def run_export(cfg: ExportConfig) -> Path:
    out = export_pipeline(cfg.checkpoint, cfg.out, vae=cfg.vae, text_encoder=cfg.text_encoder,
                          scheduler=cfg.scheduler, overwrite=cfg.overwrite)
    log.info("wrote the diffusers pipeline folder %s", out)
    return out
