"""Validation sampling during training: fixed prompts and seeds every ``validation.every_steps``.

Every rank runs the sampler on the same prompts (under ZeRO-3 the DiT's forward is collective);
rank 0 writes ``run.dir/samples/step_N/<i>.mp4`` with an ``index.json`` and logs them as W&B videos.
The sampling code is the one ``launch/sample.py`` runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from allegro_train.config import ConfigError
from allegro_train.sampling.sampler import Sampler
from allegro_train.sampling.schedulers import build_scheduler
from allegro_train.sampling.video import write_video


class Validator:
    def __init__(self, cfg, device: torch.device, run_dir: Path, is_main: bool, encoders=None):
        val, model_cfg = cfg.validation, cfg.model
        if encoders is None:  # precomputed training data: load the frozen encoders for sampling only
            if not model_cfg.vae_pretrained or not model_cfg.text_encoder_pretrained:
                raise ConfigError("validation.every_steps needs model.vae_pretrained and "
                                  "model.text_encoder_pretrained to decode and to encode its prompts")
            from allegro_train.training.inputs import OnlineInputs

            encoders = OnlineInputs(model_cfg, device)
        self.vae, self.text = encoders.vae, encoders.text
        self.scheduler = build_scheduler(val.scheduler)
        bucket = cfg.data.buckets[0]
        self.size = (val.num_frames or bucket.frames, val.height or bucket.height, val.width or bucket.width)
        self.cfg, self.device, self.is_main = val, device, is_main
        self.folder = run_dir / "samples"

    @torch.no_grad()
    def run(self, module: torch.nn.Module, step: int) -> list[tuple[Path, str]]:
        """Sample the prompts with ``module``; returns (mp4 path, prompt) pairs written by rank 0."""
        was_training = module.training
        sampler = Sampler(module, self.vae, self.text, self.scheduler, self.device)
        frames, height, width = self.size
        videos = sampler.sample(list(self.cfg.prompts), self.cfg.negative_prompt, frames, height, width,
                                steps=self.cfg.steps, guidance=self.cfg.guidance, seed=self.cfg.seed)
        module.train(was_training)
        if not self.is_main:
            return []
        folder = self.folder / f"step_{step:09d}"
        folder.mkdir(parents=True, exist_ok=True)
        written = [(write_video(video, folder / f"{i:02d}.mp4", fps=self.cfg.fps), prompt)
                   for i, (video, prompt) in enumerate(zip(videos, self.cfg.prompts))]
        index = [{"file": path.name, "prompt": prompt, "seed": self.cfg.seed} for path, prompt in written]
        (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n")
        return written
