"""Diffusion math outside the network: noise schedules, timestep sampling and training losses.

Imports torch only. ``DiffusionObjective.loss(model_fn, x0, cond, generator, mask)`` is the one
call the trainer makes; the rest is exposed for sampling, validation and tests.
"""

from allegro_train.diffusion.objectives import (
    FLOW_TIMESTEP_SCALE,
    KINDS,
    DiffusionObjective,
    LossOutput,
    NoisedBatch,
    drop_captions,
    masked_mean_per_sample,
    min_snr_weights,
    sample_noise,
)
from allegro_train.diffusion.schedules import DDPMSchedule
from allegro_train.diffusion.timesteps import (
    logit_normal_timesteps,
    resolution_dependent_shift,
    shift_timesteps,
    uniform_timesteps,
)

__all__ = [
    "FLOW_TIMESTEP_SCALE",
    "KINDS",
    "DDPMSchedule",
    "DiffusionObjective",
    "LossOutput",
    "NoisedBatch",
    "drop_captions",
    "logit_normal_timesteps",
    "masked_mean_per_sample",
    "min_snr_weights",
    "resolution_dependent_shift",
    "sample_noise",
    "shift_timesteps",
    "uniform_timesteps",
]
