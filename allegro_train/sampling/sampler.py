"""``Sampler``: prompts -> uint8 video frames, the loop of diffusers' ``AllegroPipeline`` on our models.

    prompts --T5--> states [2B, L, D] (negative prompt first: one CFG batch)
    noise [B, 4, T/4, H/8, W/8] * init_noise_sigma --steps x (DiT on [2B], CFG, scheduler.step)-->
    latents --/ scaling_factor, VAE decode--> [B, 3, T, H, W] in [-1, 1] --> uint8 [B, T, H, W, 3]

It follows the reference step for step, so one seed gives the reference's frames (a test checks
this against ``AllegroPipeline`` to one uint8 level): the noise comes from a CPU ``torch.Generator``
through diffusers' ``randn_tensor`` before the first step, and the same generator feeds the
scheduler's ancestral noise. Two deliberate differences, neither changing the result:

* prompts are padded to the longest in the batch, not to 512 tokens; padded tokens are masked out
  of cross-attention, so they only cost time (the reference attends over 512 text tokens).
* latents and the scheduler stay fp32 whatever the model dtype (the reference keeps them in the
  text encoder's dtype, bf16 for the released weights); the DiT sees its own dtype.

Image-to-video: with a TI2V transformer (``AllegroTI2VDiT``) ``sample(..., condition=Condition...)``
encodes the given frames as the released TI2V pipeline does (``sampling/conditioning.py``) and
feeds them to the DiT beside the noisy latents at every step, in both CFG halves.

Memory options: ``offload=True`` keeps every model on the CPU and moves each to the device only
for its stage (T5, then the DiT, then the VAE); ``vae.enable_tiling()`` (``vae_tiling=True`` in
``from_pretrained``) decodes in tiles; ``dtype=torch.bfloat16`` runs the DiT and T5 in bf16 (the
VAE stays fp32, as the released pipeline forces).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from allegro_train.models.dit import AllegroDiT, AllegroTI2VDiT, condition_mask, transformer_class
from allegro_train.models.text import T5TextEncoder
from allegro_train.models.vae import VideoVAE
from allegro_train.sampling.components import resolve_components
from allegro_train.sampling.conditioning import Condition
from allegro_train.sampling.schedulers import build_scheduler


def latent_grid(num_frames: int, height: int, width: int, compression: tuple[int, int, int],
                patch: int) -> tuple[int, int, int]:
    """Pixel size -> latent grid (T', H', W'); ``ValueError`` naming the value the VAE or patch cannot take.

    Frames must be a multiple of the VAE's temporal compression (4: 88 -> 22) and height / width of
    spatial compression x patch (8 x 2 = 16: 720 -> 45 latent rows, 22.5 tokens, would not tile).
    """
    t, s = compression[0], compression[1]
    problems = []
    if num_frames < t or num_frames % t:
        problems.append(f"num_frames={num_frames} must be a positive multiple of {t} (the VAE compresses time {t}x)")
    for key, value in (("height", height), ("width", width)):
        if value < s * patch or value % (s * patch):
            problems.append(f"{key}={value} must be a positive multiple of {s * patch} (VAE {s}x times DiT patch {patch})")
    if problems:
        raise ValueError("; ".join(problems))
    return num_frames // t, height // s, width // s


def check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts={prompts!r}: expected a non-empty list of str")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompts[{i}]={prompt!r}: expected a non-empty str")
    return list(prompts)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[B, 3, T, H, W] in [-1, 1] -> uint8 [B, T, H, W, 3], rounded as diffusers' VideoProcessor does."""
    frames = (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).cpu().numpy()  # [B, T, H, W, 3]
    return (frames * 255).round().astype(np.uint8)


class Sampler:
    """DiT + VAE + T5 + a diffusers scheduler; ``sample`` returns uint8 frames [N, T, H, W, 3].

    The models are used as given (the trainer passes its own DiT for validation samples); the
    scheduler is a diffusers scheduler instance (``build_scheduler``).
    """

    def __init__(self, transformer: AllegroDiT, vae: VideoVAE, text_encoder: T5TextEncoder, scheduler,
                 device: str | torch.device = "cpu", offload: bool = False):
        self.device = torch.device(device)
        if offload and self.device.type == "cpu":
            raise ValueError(f"offload=True with device={self.device}: offload moves models between the CPU and "
                             "an accelerator; drop it on a CPU")
        dit, vae_cfg = transformer.config, vae.config
        if dit.caption_channels != text_encoder.hidden_size:
            raise ValueError(f"the DiT's caption_channels={dit.caption_channels} differs from the text encoder's "
                             f"d_model={text_encoder.hidden_size}: they were not trained together")
        if dit.in_channels != vae_cfg.latent_channels:
            raise ValueError(f"the DiT's in_channels={dit.in_channels} differs from the VAE's "
                             f"latent_channels={vae_cfg.latent_channels}")
        self.transformer, self.vae, self.text_encoder, self.scheduler = transformer, vae, text_encoder, scheduler
        self.offload = offload
        home = torch.device("cpu") if offload else self.device
        for module in (transformer, vae, text_encoder.model):
            module.eval().to(home)

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike, vae: str | os.PathLike | None = None,
                        text_encoder: str | os.PathLike | None = None, scheduler: str | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        vae_tiling: bool = False, offload: bool = False, max_length: int = 512) -> "Sampler":
        """Load a pipeline folder or a run checkpoint (``resolve_components`` says which paths are read)."""
        parts = resolve_components(checkpoint, vae, text_encoder)
        built_scheduler = build_scheduler(scheduler, parts.scheduler)  # before weights: a bad name fails fast
        load_device = "cpu" if offload else device
        dit = transformer_class(parts.transformer).from_pretrained(parts.transformer, torch_dtype=dtype,
                                                                   device=load_device)
        video_vae = VideoVAE.from_pretrained(parts.vae, torch_dtype=torch.float32, device=load_device)
        if vae_tiling:
            video_vae.enable_tiling()
        text = T5TextEncoder.from_pretrained(parts.text_encoder, max_length=max_length, dtype=dtype, device=load_device)
        return cls(dit, video_vae, text, built_scheduler, device=device, offload=offload)

    @contextlib.contextmanager
    def _on_device(self, module: nn.Module) -> Iterator[None]:
        """With offload, ``module`` lives on the device only inside this block."""
        if self.offload:
            module.to(self.device)
        try:
            yield
        finally:
            if self.offload:
                module.to("cpu")

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative_prompt: str, guidance: float,
                       clean_caption: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """-> states [B or 2B, L, D], mask [B or 2B, L]; with CFG the negative prompts come first, as the
        reference's batch [uncond, cond]. One tokenizer call, so both halves share one padded L."""
        texts = ([negative_prompt] * len(prompts) + prompts) if guidance > 1.0 else prompts
        if not clean_caption:  # the reference lower-cases and strips whenever it does not clean
            texts = [t.lower().strip() for t in texts]
        with self._on_device(self.text_encoder.model):
            states, mask = self.text_encoder.encode(texts, clean=clean_caption)
        return states.to(self.device), mask.to(self.device)

    @property
    def is_ti2v(self) -> bool:
        return isinstance(self.transformer, AllegroTI2VDiT)

    def initial_noise(self, batch: int, grid: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
        """[B, C, T', H', W'] fp32 standard normal, drawn as diffusers' pipelines draw it (``randn_tensor``)."""
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor((batch, self.transformer.config.in_channels, *grid), generator=generator,
                            device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def encode_condition(self, condition: Condition, num_frames: int, height: int, width: int, batch: int,
                         generator: torch.Generator) -> torch.Tensor:
        """The TI2V DiT's extra input [B, 2C, T', H', W']: VAE latents of the masked clip, then the mask.

        As the released pipeline: the clip (given frames, zeros elsewhere) is repeated over the batch
        and encoded in fp32, each copy drawing its own ``latent_dist.sample(generator) * scaling``.
        """
        video, generate = condition.pixels(num_frames, height, width)  # [3, T, H, W], [T]
        with self._on_device(self.vae):
            posterior = self.vae.encode(video[None].expand(batch, -1, -1, -1, -1).to(self.device))
            masked = posterior.sample(generator) * self.vae.scaling_factor  # [B, C, T', H', W']
        mask = condition_mask(generate[None].expand(batch, -1), tuple(masked.shape[2:]), masked.shape[1])
        return torch.cat([masked.float(), mask.to(masked.device)], dim=1)

    @torch.no_grad()
    def denoise(self, states: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int, int], steps: int,
                guidance: float, generator: torch.Generator, eta: float = 0.0, noise: torch.Tensor | None = None,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """Text states (CFG layout as ``encode_prompts``) -> clean latents [B, C, T', H', W'] (scaled).

        ``noise``: the starting draw (default: ``initial_noise`` from ``generator``); ``condition``
        [B, 2C, T', H', W']: a TI2V DiT's extra input (``encode_condition``), the same in both CFG halves.
        """
        cfg = guidance > 1.0
        batch = states.shape[0] // 2 if cfg else states.shape[0]
        dit, scheduler = self.transformer, self.scheduler
        dtype = next(dit.parameters()).dtype
        scheduler.set_timesteps(steps, device=self.device)
        if noise is None:
            noise = self.initial_noise(batch, grid, generator)
        latents = noise * scheduler.init_noise_sigma  # [B, C, T', H', W']
        if condition is not None:
            condition = torch.cat([condition, condition]) if cfg else condition
        accepted = inspect.signature(scheduler.step).parameters
        step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in accepted}
        text = states.to(dtype)
        with self._on_device(dit):
            for t in scheduler.timesteps:
                model_in = torch.cat([latents, latents]) if cfg else latents  # [2B, C, T', H', W']
                model_in = scheduler.scale_model_input(model_in, t)
                if condition is not None:  # TI2V: [noisy | masked-clip latents | mask] on channels
                    model_in = torch.cat([model_in, condition], dim=1)
                eps = dit(model_in.to(dtype), t.expand(model_in.shape[0]), text, mask).float()
                if cfg:
                    uncond, cond = eps.chunk(2)
                    eps = uncond + guidance * (cond - uncond)
                latents = scheduler.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents [B, C, T', H', W'] -> uint8 [B, T, H, W, 3], one video at a time (peak memory)."""
        videos = []
        with self._on_device(self.vae):
            for z in latents.split(1):
                video = self.vae.decode(z.float() / self.vae.scaling_factor)  # [1, 3, T, H, W]
                videos.append(to_uint8(video))
        return np.concatenate(videos)

    def sample_latents(self, prompts: Sequence[str], negative_prompt: str = "", num_frames: int = 88,
                       height: int = 720, width: int = 1280, steps: int = 100, guidance: float = 7.5, seed: int = 0,
                       clean_caption: bool = True, eta: float = 0.0,
                       condition: Condition | None = None) -> torch.Tensor:
        """Prompts (one batch) -> clean scaled latents [N, C, num_frames/4, height/8, width/8], undecoded.

        ``seed`` seeds a CPU generator, as the reference's examples do, so a seed gives the same
        video on any device (and the same noise on every rank of a sequence-parallel group).
        ``guidance <= 1`` turns classifier-free guidance off. ``condition``: the given frames of a
        TI2V transformer (required by one, refused by a T2V one).
        """
        prompts = check_prompts(prompts)
        if steps < 1:
            raise ValueError(f"steps={steps}: must be >= 1")
        if self.is_ti2v != (condition is not None):
            raise ValueError("a TI2V transformer needs a condition (image, last image or clip)" if self.is_ti2v else
                             "a condition (image, last image or clip) needs a TI2V transformer; this one is T2V "
                             "(convert it with launch/convert_ti2v.py and train it, docs/ti2v.md)")
        grid = latent_grid(num_frames, height, width, self.vae.config.compression, self.transformer.config.patch_size)
        generator = torch.Generator("cpu").manual_seed(seed)
        states, mask = self.encode_prompts(prompts, negative_prompt, guidance, clean_caption)
        # The released TI2V pipeline's order of draws: the starting noise, then the masked clip's VAE sample.
        noise = self.initial_noise(len(prompts), grid, generator)
        encoded = None if condition is None else self.encode_condition(
            condition, num_frames, height, width, len(prompts), generator)
        return self.denoise(states, mask, grid, steps, guidance, generator, eta, noise=noise, condition=encoded)

    def sample(self, prompts: Sequence[str], *args, **kwargs) -> np.ndarray:
        """Prompts (one batch) -> uint8 frames [N, num_frames, height, width, 3]; the other arguments
        (``condition`` included) as ``sample_latents``."""
        return self.decode(self.sample_latents(prompts, *args, **kwargs))
