"""Held-out reconstruction during VAE training: ``validation.num_clips`` clips of ``validation.shards``.

The clips are read once, at start-up, through the training loader's buckets (one pass, batch 1),
so they are the same at every validation. Each is encoded to its posterior mean and decoded
(no sampling, dropout off); PSNR and SSIM (video_quality.py) are averaged over the clips. Every
rank computes the same numbers; rank 0 writes ``run.dir/reconstructions/step_N/<i>.mp4``, the
input and its reconstruction side by side, for the first ``validation.num_videos`` clips, and
they are logged as W&B videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from allegro_train.config import ConfigError
from allegro_train.data import build_loader
from allegro_train.sampling.video import write_video
from allegro_train.training.video_quality import psnr, ssim


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


class ReconstructionValidator:
    def __init__(self, cfg, device: torch.device, dtype: torch.dtype, run_dir: Path, is_main: bool):
        val = cfg.validation
        data_cfg = OmegaConf.merge(cfg.data, {"shards": list(val.shards), "epochs": 1, "batch_size": 1,
                                              "num_workers": 0, "token_budget": None, "image_fraction": None})
        self.clips: list[tuple[torch.Tensor, str]] = []  # ([1, 3, F, H, W] in [-1, 1], key)
        for batch in build_loader(data_cfg, seed=cfg.run.seed):
            self.clips.append((batch["video"], batch["keys"][0]))
            if len(self.clips) == val.num_clips:
                break
        if len(self.clips) < val.num_clips:
            raise ConfigError(f"validation.num_clips={val.num_clips}: validation.shards={list(val.shards)} hold only "
                              f"{len(self.clips)} clip(s) that fit data.buckets")
        self.device, self.dtype, self.is_main = device, dtype, is_main
        self.num_videos, self.fps = val.num_videos, val.fps
        self.folder = run_dir / "reconstructions"

    @torch.no_grad()
    def run(self, vae: torch.nn.Module, step: int) -> tuple[dict[str, float], list[tuple[Path, str]]]:
        """({"val/psnr", "val/ssim"}, [(mp4 path, clip key)] written by rank 0)."""
        was_training = vae.training
        vae.eval()
        scores, videos = [], []
        for i, (video, key) in enumerate(self.clips):
            clip = vae.as_clip(video).to(self.device)  # images as still clips, as in training
            recon, _ = vae(clip.to(self.dtype), sample_posterior=False)
            recon = recon.float().clamp(-1, 1)
            scores.append((float(psnr(clip, recon)[0]), float(ssim(clip, recon)[0])))
            if self.is_main and i < self.num_videos:
                side_by_side = torch.cat([clip[0], recon[0]], dim=-1).cpu()  # [3, T, H, 2W]
                path = self.folder / f"step_{step:09d}" / f"{i:02d}.mp4"
                videos.append((write_video(to_uint8(side_by_side), path, fps=self.fps), key))
        vae.train(was_training)
        psnrs, ssims = zip(*scores)
        return {"val/psnr": sum(psnrs) / len(psnrs), "val/ssim": sum(ssims) / len(ssims)}, videos
