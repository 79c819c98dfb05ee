"""Training objectives: noise a clean latent, call the network, weight the MSE.

The network never sees the schedule (as in facebookresearch/DiT's ``training_losses``):

    x0 [B, C, T, H, W] --noise, t--> x_t --model_fn(x_t, t_model, **cond)--> prediction
    loss = mean_b( w_b * masked_mean((prediction - target)^2)_b )

Kinds, and what ``model_fn`` receives as its timestep:
  * ``"epsilon"`` (released Allegro): DDPM, t long in [0, N), target eps.
  * ``"v"``: DDPM, target v = sqrt(a_t) eps - sqrt(1 - a_t) x0.
  * ``"flow"`` (rectified flow): t in (0, 1) with t = 1 pure noise, x_t = (1 - t) x0 + t eps,
    target eps - x0; the model gets ``t * 1000`` as a float, the SD3 / diffusers
    ``FlowMatchEulerDiscreteScheduler`` convention, which keeps the timestep embedding's input in
    the same [0, 1000) range (and noise direction) a DDPM-trained Allegro saw.

Defaults are the released recipe: epsilon, min-SNR gamma 5, offset noise 0.02, caption drop 0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from allegro_train.diffusion.schedules import DDPMSchedule
from allegro_train.diffusion.timesteps import logit_normal_timesteps, uniform_timesteps

KINDS = ("epsilon", "v", "flow")
FLOW_TIMESTEP_SCALE = 1000.0

ModelFn = Callable[..., torch.Tensor]


def sample_noise(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator,
    offset_noise: float = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Gaussian noise [B, C, *rest] fp32, plus ``offset_noise * randn(B, C, 1, ...)``.

    The offset term is constant over each (sample, channel); it lets the model learn to shift a
    whole clip's mean brightness, which zero-mean per-element noise almost never asks of it
    (Guttenberg 2023, "Diffusion with offset noise"). The per-element draw comes first, then the
    offset, as in the released ``train.py``; drawn in fp32 so bf16 and fp32 runs see the same noise.
    """
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    if offset_noise:
        offset_shape = tuple(shape[:2]) + (1,) * (len(shape) - 2)  # [B, C, 1, 1, 1]
        noise = noise + offset_noise * torch.randn(
            offset_shape, generator=generator, device=generator.device, dtype=torch.float32
        )
    return noise.to(device) if device is not None else noise


def min_snr_weights(snr: torch.Tensor, gamma: float, kind: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for each sample: snr [B] -> [B] fp32.

    epsilon: min(SNR, gamma) / SNR; v: min(SNR, gamma) / (SNR + 1). Both turn the network's loss
    into an x0-space loss whose weight is clipped at gamma, so the easy low-noise steps stop
    dominating the gradient.
    """
    clipped = snr.clamp(max=gamma)
    if kind == "epsilon":
        return clipped / snr
    if kind == "v":
        return clipped / (snr + 1.0)
    raise ValueError(f"min-SNR weighting is defined for 'epsilon' and 'v', not {kind!r}")


def masked_mean_per_sample(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all non-batch elements that the mask keeps: values [B, ...] -> [B].

    ``mask`` is 1 keep / 0 pad and broadcasts to ``values`` ([B, 1, T, H, W] counts each kept
    position once per channel). A sample with nothing kept contributes 0, not NaN.
    """
    dims = tuple(range(1, values.ndim))
    if mask is None:
        return values.mean(dim=dims)
    mask = mask.to(device=values.device, dtype=values.dtype).expand_as(values)
    return (values * mask).sum(dim=dims) / mask.sum(dim=dims).clamp(min=1.0)


def drop_captions(
    text_states: torch.Tensor,
    text_mask: torch.Tensor,
    null_states: torch.Tensor,
    null_mask: torch.Tensor,
    p: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each sample's caption by the empty prompt's with probability p (classifier-free guidance).

    text_states [B, L, C], text_mask [B, L]; null_states [1, L, C], null_mask [1, L] (the encoded
    "" broadcast over the batch) -> (states [B, L, C], mask [B, L]) in the inputs' dtypes. The
    released recipe uses p = 0.1. One uniform a sample is drawn even when p is 0 or 1, so the
    generator's stream does not depend on p.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p}: must lie in [0, 1]")
    batch = text_states.shape[0]
    u = torch.rand((batch,), generator=generator, device=generator.device)
    drop = (u < p).to(text_states.device)  # [B] bool; u in [0, 1) so p=0 keeps all, p=1 drops all
    null_states = null_states.to(device=text_states.device, dtype=text_states.dtype)
    null_mask = null_mask.to(device=text_mask.device, dtype=text_mask.dtype)
    states = torch.where(drop[:, None, None], null_states, text_states)  # [B, L, C]
    mask = torch.where(drop[:, None], null_mask, text_mask)  # [B, L]
    return states, mask


@dataclass
class NoisedBatch:
    """One draw of the forward process, everything ``loss`` needs besides the network.

    noisy [B, C, T, H, W] in x0's dtype (the network input); model_timesteps [B] (long for DDPM,
    fp32 t * 1000 for flow); target [B, C, T, H, W] fp32; timesteps [B] (the drawn level: long in
    [0, N) for DDPM, fp32 in (0, 1) for flow).
    """

    noisy: torch.Tensor
    model_timesteps: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor


@dataclass
class LossOutput:
    """loss: scalar fp32 = per_sample.mean(); per_sample [B]: weight * masked MSE;
    timesteps [B]: as in ``NoisedBatch``; weights [B]: the min-SNR weights (ones when off)."""

    loss: torch.Tensor
    per_sample: torch.Tensor
    timesteps: torch.Tensor
    weights: torch.Tensor


@dataclass
class DiffusionObjective:
    """The training loss, built from plain arguments (the config schema maps onto these fields).

    ``min_snr_gamma=None`` turns the weighting off; it is never applied to ``"flow"`` (min-SNR is
    derived for the DDPM parameterisations). ``offset_noise`` applies to every kind. ``flow_*``
    set the logit-normal time distribution and its shift (see ``timesteps.py``) and are unused for
    DDPM kinds.

    Determinism: all randomness (noise, offset, timesteps, in that order) comes from the
    generator passed to ``loss``. Ranks that must agree (one sequence-parallel group) pass
    generators with equal state; data-parallel ranks pass different seeds.
    """

    kind: str = "epsilon"
    schedule: DDPMSchedule = field(default_factory=DDPMSchedule)
    min_snr_gamma: float | None = 5.0
    offset_noise: float = 0.02
    flow_logit_mean: float = 0.0
    flow_logit_std: float = 1.0
    flow_shift: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: use one of {KINDS}")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma={self.min_snr_gamma}: must be > 0 or None")
        if self.offset_noise < 0:
            raise ValueError(f"offset_noise={self.offset_noise}: must be >= 0")
        if self.flow_logit_std <= 0 or self.flow_shift <= 0:
            raise ValueError(f"flow_logit_std={self.flow_logit_std}, flow_shift={self.flow_shift}: must be > 0")

    def sample_inputs(self, x0: torch.Tensor, generator: torch.Generator) -> NoisedBatch:
        """Draw noise and timesteps for clean latents x0 [B, C, T, H, W] (fp32 or bf16)."""
        batch = x0.shape[0]
        noise = sample_noise(x0.shape, generator, self.offset_noise, device=x0.device)  # [B, C, T, H, W] fp32
        x0_32 = x0.float()
        if self.kind == "flow":
            t = logit_normal_timesteps(
                batch, generator, self.flow_logit_mean, self.flow_logit_std, self.flow_shift, device=x0.device
            )  # [B] fp32 in (0, 1)
            t_b = t.view(-1, *(1,) * (x0.ndim - 1))
            noisy = (1.0 - t_b) * x0_32 + t_b * noise
            target = noise - x0_32  # d x_t / d t: the constant velocity of the straight path
            return NoisedBatch(noisy.to(x0.dtype), t * FLOW_TIMESTEP_SCALE, target, t)

        t = uniform_timesteps(batch, self.schedule.num_train_timesteps, generator, device=x0.device)  # [B] long
        noisy = self.schedule.add_noise(x0_32, noise, t)
        target = noise if self.kind == "epsilon" else self.schedule.velocity(x0_32, noise, t)
        return NoisedBatch(noisy.to(x0.dtype), t, target, t)

    def weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weights [B] fp32 for the drawn timesteps [B]."""
        if self.kind == "flow" or self.min_snr_gamma is None:
            return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
        return min_snr_weights(self.schedule.snr(timesteps), self.min_snr_gamma, self.kind)

    def loss_from_prediction(
        self, prediction: torch.Tensor, batch: NoisedBatch, mask: torch.Tensor | None = None
    ) -> LossOutput:
        """Weighted masked MSE in fp32 between prediction and batch.target, both [B, C, T, H, W]."""
        squared_error = (prediction.float() - batch.target) ** 2  # [B, C, T, H, W] fp32
        weights = self.weights(batch.timesteps)
        per_sample = weights * masked_mean_per_sample(squared_error, mask)  # [B]
        return LossOutput(per_sample.mean(), per_sample, batch.timesteps, weights)

    def loss(
        self,
        model_fn: ModelFn,
        x0: torch.Tensor,
        cond: Mapping[str, Any],
        generator: torch.Generator,
        mask: torch.Tensor | None = None,
    ) -> LossOutput:
        """Noise x0 [B, C, T, H, W], run ``model_fn(noisy, timesteps, **cond)``, return the loss.

        ``cond`` holds the network's other inputs (for AllegroDiT: ``text_states`` [B, L, 4096],
        ``text_mask`` [B, L]). ``mask`` (1 keep / 0 pad, broadcastable to x0, e.g. [B, 1, T, H, W])
        keeps padded latents out of the mean.
        """
        batch = self.sample_inputs(x0, generator)
        prediction = model_fn(batch.noisy, batch.model_timesteps, **cond)
        if prediction.shape != batch.target.shape:
            raise ValueError(f"model output {tuple(prediction.shape)} != target {tuple(batch.target.shape)}")
        return self.loss_from_prediction(prediction, batch, mask)
