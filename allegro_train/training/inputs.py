"""What the DiT trains on: a loader batch -> (latents, text states, text mask), plus the empty caption.

Precomputed shards already hold latents and T5 states. Online (``data.precomputed=false``), raw
clips and captions are encoded here, on the trainer's device, by the frozen VideoVAE (fp32, as the
released recipe: ``latent_dist.sample() * scaling_factor``) and T5 (bf16 on GPUs).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from allegro_train.config import ConfigError

Text = tuple[torch.Tensor, torch.Tensor]  # states [B, L, D], mask [B, L]


class PrecomputedInputs:
    def __init__(self, null_caption_path: Optional[str]):
        self.null: Optional[Text] = None
        if null_caption_path is not None:
            states = torch.from_numpy(np.load(null_caption_path, allow_pickle=False)).float()[None]  # [1, L, D]
            self.null = (states, torch.ones(states.shape[:2], dtype=torch.long))

    def __call__(self, batch: dict, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, Text]:
        return batch["latents"].to(device), (batch["text_states"], batch["text_mask"])


class OnlineInputs:
    def __init__(self, model_cfg, device: torch.device):
        if not model_cfg.vae_pretrained or not model_cfg.text_encoder_pretrained:
            raise ConfigError("data.precomputed=false encodes raw clips in the trainer: set model.vae_pretrained "
                              "and model.text_encoder_pretrained (diffusers vae/ and text_encoder/+tokenizer/ folders)")
        from allegro_train.models.text import T5TextEncoder
        from allegro_train.models.vae import VideoVAE

        self.vae = VideoVAE.from_pretrained(model_cfg.vae_pretrained, torch_dtype=torch.float32, device=device).eval()
        self.vae.requires_grad_(False)
        if model_cfg.vae_tiling:
            self.vae.enable_tiling()
        text_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.text = T5TextEncoder.from_pretrained(model_cfg.text_encoder_pretrained, dtype=text_dtype, device=device)
        self.device = device
        self.null: Text = self.text.encode([""])

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Pixels [B, 3, T, H, W] in [-1, 1] -> scaled latents [B, 4, T', H', W'] fp32 (also TI2V's masked clips)."""
        posterior = self.vae.encode(video.to(self.device, torch.float32))
        return (posterior.sample(generator) * self.vae.scaling_factor).float()

    @torch.no_grad()
    def __call__(self, batch: dict, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, Text]:
        latents = self.encode_video(batch["video"], generator)
        states, mask = self.text.encode(list(batch["captions"]))
        return latents, (states.float(), mask)
