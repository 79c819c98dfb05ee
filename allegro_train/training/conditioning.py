"""TI2V training conditions: per sample a task, its frame mask, and the DiT's extra input channels.

As the released ``allegro_ti2v_datasets.py`` + ``train_ti2v.py`` (docs/ti2v.md):

    task (drawn with weights ti2v.i2v / .interpolation / .v2v)
      -> generate [B, T] over pixel frames: 0 given, 1 to generate
         i2v: frame 0 given; interpolation: frames 0 and T-1; v2v: frames 0 .. k-1
      -> masked clip = clip with the generated frames set to 0 (mid-grey in [-1, 1])
         --frozen VAE, latent_dist.sample() * scaling--> masked latents [B, C, T', H', W']
      -> mask = condition_mask(generate) [B, C, T', H', W'] (the released layout)
    condition = [masked latents | mask] [B, 2C, T', H', W'], concatenated after the noisy latents.

The loss covers every latent frame, the given ones too, as the released ``train_ti2v.py`` does
(its only loss mask is padding, which a bucket never has).

Precomputed shards hold latents and no pixels, so there the masked clip cannot be encoded; its
latents are approximated in latent space: a latent frame is kept when any of the pixel frames it
covers (T / T' consecutive ones) is given, and zeroed otherwise. That is not the released input
(the VAE sees the given frame next to grey ones), so for the released recipe train on raw clips
(``data.precomputed=false``); the approximation serves debug runs and the demo.
"""

from __future__ import annotations

import logging

import torch

from allegro_train.models.dit import condition_mask

log = logging.getLogger(__name__)

TASKS = ("i2v", "interpolation", "v2v")


def task_mask(task: str, frames: int, given: int = 1) -> torch.Tensor:
    """[frames] float: 0 for the frames ``task`` gives, 1 for those to generate (``given``: v2v's k)."""
    generate = torch.ones(frames)
    if task == "i2v":
        generate[0] = 0
    elif task == "interpolation":
        generate[0] = generate[-1] = 0
    elif task == "v2v":
        if not 1 <= given <= frames:
            raise ValueError(f"v2v gives {given} frames of {frames}: must be in [1, {frames}]")
        generate[:given] = 0
    else:
        raise ValueError(f"task {task!r}: one of {TASKS}")
    return generate


def latent_frames_given(generate: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """[B, T] pixel mask -> [B, T'] float, 1 where any of the T / T' pixel frames a latent covers is given."""
    batch, frames = generate.shape
    return (1 - generate).view(batch, latent_frames, frames // latent_frames).amax(dim=-1)


class Conditioner:
    """Draws each sample's task and builds its condition channels ([B, 2C, T', H', W'])."""

    def __init__(self, i2v: float, interpolation: float, v2v: float, v2v_frames: int | None = None):
        weights = torch.tensor([i2v, interpolation, v2v], dtype=torch.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"task weights {weights.tolist()}: must be >= 0 with a positive sum")
        self.bounds = (weights.cumsum(0) / weights.sum())[:-1]  # upper ends of i2v and interpolation
        self.v2v_frames = v2v_frames
        self.warned_latent_masking = False

    def draw(self, batch: int, frames: int, generator: torch.Generator) -> tuple[list[str], torch.Tensor]:
        """Tasks and the pixel mask [B, frames] (0 given, 1 generate). Draws two numbers a sample
        (task, v2v's k) whatever the mix, so the generator's stream does not depend on it."""
        u = torch.rand(batch, generator=generator, dtype=torch.float64)
        k = torch.randint(1, frames + 1, (batch,), generator=generator)  # the released randint(1, T)
        tasks = [TASKS[int(torch.searchsorted(self.bounds, x, right=True))] for x in u]
        given = [self.v2v_frames or int(n) for n in k]
        return tasks, torch.stack([task_mask(task, frames, n) for task, n in zip(tasks, given)])

    def __call__(self, batch: dict, latents: torch.Tensor, inputs, generator: torch.Generator) -> torch.Tensor:
        """The condition for one loader batch: latents [B, C, T', H', W'] -> [B, 2C, T', H', W'].

        ``inputs`` (training/inputs.py) encodes the masked raw clips with the frozen VAE when the
        batch holds pixels (``batch["video"]`` [B, 3, T, H, W] in [-1, 1]).
        """
        size, channels, latent_frames = latents.shape[:3]
        frames = int(batch["bucket"][0])
        _, generate = self.draw(size, frames, generator)  # [B, T]
        generate = generate.to(latents.device)
        if "video" in batch:
            video = batch["video"].to(latents.device)
            masked = inputs.encode_video(video * (1 - generate)[:, None, :, None, None], generator)
        else:
            if not self.warned_latent_masking:
                log.warning("ti2v: precomputed latents hold no pixels; the masked clip is approximated in latent "
                            "space (docs/ti2v.md). Train on raw clips (data.precomputed=false) for the released input.")
                self.warned_latent_masking = True
            masked = latents * latent_frames_given(generate, latent_frames)[:, None, :, None, None]
        mask = condition_mask(generate, tuple(latents.shape[2:]), channels).to(latents.dtype)
        return torch.cat([masked.to(latents.dtype), mask], dim=1)


def build_conditioner(ti2v_cfg) -> Conditioner | None:
    """The ``ti2v`` config group's conditioner, or None for text-to-video training."""
    if not ti2v_cfg.enabled:
        return None
    return Conditioner(ti2v_cfg.i2v, ti2v_cfg.interpolation, ti2v_cfg.v2v, ti2v_cfg.v2v_frames)


def with_condition(noisy: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    """The DiT input: noisy latents, then the condition channels when there are any (TI2V)."""
    return noisy if condition is None else torch.cat([noisy, condition.to(noisy.dtype)], dim=1)
