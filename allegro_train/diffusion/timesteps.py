"""Training-time noise levels: uniform discrete DDPM steps, and logit-normal flow times with a shift.

Every sampler takes an explicit ``torch.Generator`` so a run's timesteps replay exactly after a
resume (the generator's state is checkpointed with the trainer). Values are drawn on the
generator's device and then moved to ``device``: a CPU generator can drive CUDA training, and the
stream does not depend on where the model runs.
"""

from __future__ import annotations

import math

import torch


def uniform_timesteps(
    batch_size: int, num_train_timesteps: int, generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Tensor:
    """Released Allegro default: t ~ U{0, ..., N-1}, one per sample -> long [B]."""
    t = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=generator.device)
    return t.to(device) if device is not None else t


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Time shift t' = shift * t / (1 + (shift - 1) * t), t in [0, 1] (t = 1 is pure noise).

    It multiplies the noise-to-signal odds t / (1 - t) by ``shift``, so shift > 1 moves mass toward
    noise, shift = 1 is the identity, it is monotone increasing for any shift > 0, and two shifts
    compose by multiplying. This is SD3's eq. 23 and diffusers' ``FlowMatchEulerDiscreteScheduler``
    static shift.
    """
    if shift <= 0:
        raise ValueError(f"shift={shift}: must be > 0")
    return shift * t / (1.0 + (shift - 1.0) * t)


def logit_normal_timesteps(
    batch_size: int,
    generator: torch.Generator,
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Rectified-flow times t = shift(sigmoid(mean + std * n)), n ~ N(0, 1) -> fp32 [B] in (0, 1).

    Logit-normal sampling (SD3, Esser et al. 2024, section 3.1) spends more steps at middle noise
    levels, where the flow's velocity is hardest to predict; ``shift`` then tilts toward noise.
    """
    if std <= 0:
        raise ValueError(f"std={std}: must be > 0")
    n = torch.randn((batch_size,), generator=generator, device=generator.device, dtype=torch.float32)
    t = shift_timesteps(torch.sigmoid(mean + std * n), shift)
    return t.to(device) if device is not None else t


def resolution_dependent_shift(
    num_tokens: int,
    base_tokens: int = 1024,
    base_shift: float = 1.0,
    max_shift: float | None = None,
) -> float:
    """Shift for a token count, SD3-style: ``shift = base_shift * sqrt(num_tokens / base_tokens)``.

    Source: Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image
    Synthesis", section 5.3.2: at m tokens the same per-pixel signal-to-noise as at n tokens needs
    the time shift alpha = sqrt(m / n) (more tokens average away more noise, so the schedule must
    be noisier). Because shifts compose by multiplication (see ``shift_timesteps``), a base
    resolution trained at ``base_shift`` maps to ``base_shift * sqrt(m / n)``; ``max_shift`` caps
    the result for very long video sequences.

    The default base is SD3's 256^2 stage (32 x 32 latents, patch 2 -> 1024 tokens, shift 1).
    For Allegro grids (patch 1x2x2): 40 x 368 x 640 pixels -> 10 x 46 x 80 latents -> 9,200 tokens
    -> shift 3.0; 88 x 720 x 1280 -> 79,200 tokens -> shift 8.8.

    We use SD3's rule rather than Flux's ``mu = linear(seq_len)``, ``shift = exp(mu)``: Flux's line
    is fitted on 256..4096 image tokens and extrapolates to shift ~1e6 at 79,200 video tokens.
    """
    if num_tokens < 1 or base_tokens < 1:
        raise ValueError(f"num_tokens={num_tokens}, base_tokens={base_tokens}: must be >= 1")
    if base_shift <= 0:
        raise ValueError(f"base_shift={base_shift}: must be > 0")
    shift = base_shift * math.sqrt(num_tokens / base_tokens)
    return shift if max_shift is None else min(shift, max_shift)
