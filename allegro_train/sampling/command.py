"""What ``launch/sample.py`` and ``launch/export.py`` do with a validated config."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from allegro_train.sampling.config import ExportConfig, SampleConfig
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


def run_sample(cfg: SampleConfig) -> list[Path]:
    """Sample every prompt (one at a time, each from ``cfg.seed``) and write its video; returns the paths.

    With ``sequence_parallel=K`` (under torchrun, K ranks) every rank denoises with the DiT's tokens
    split over the group and rank 0 alone decodes and writes (``sampling/distributed.py``).
    """
    prompts = read_prompts(cfg.prompts_file) if cfg.prompts_file is not None else [cfg.prompt]
    paths = output_paths(cfg.out, len(prompts), numbered=cfg.prompts_file is not None)
    if cfg.sequence_parallel > 1:
        check_sequence_parallel(cfg.sequence_parallel, cfg.checkpoint, cfg.vae, cfg.text_encoder)
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
            latents = sampler.sample_latents([prompt], cfg.negative_prompt, num_frames=cfg.num_frames,
                                             height=cfg.height, width=cfg.width, steps=cfg.steps,
                                             guidance=cfg.guidance, seed=cfg.seed, clean_caption=cfg.clean_caption)
            if writes:
                write_video(sampler.decode(latents)[0], path, cfg.fps)  # [T, H, W, 3]
                log.info("wrote %s (%s)", path, prompt)
    return paths


def run_export(cfg: ExportConfig) -> Path:
    out = export_pipeline(cfg.checkpoint, cfg.out, vae=cfg.vae, text_encoder=cfg.text_encoder,
                          scheduler=cfg.scheduler, overwrite=cfg.overwrite)
    log.info("wrote the diffusers pipeline folder %s", out)
    return out
