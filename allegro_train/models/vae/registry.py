"""Named VAE sizes. ``allegro-vae`` is the released model; ``allegro-vae-debug`` runs in seconds on a CPU."""

from __future__ import annotations

import dataclasses

from allegro_train.models.vae.config import VAEConfig

VAE_CONFIGS: dict[str, VAEConfig] = {
    "allegro-vae": VAEConfig(),
    # Same structure (4 stages: 4x time, 8x8 space), every width shrunk: 1 resnet a stage, 8 groups.
    "allegro-vae-debug": VAEConfig(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
                                   sample_size=64),
    # The built-in demo's (launch/demo.py): the debug layout with the full-resolution stages halved,
    # where a CPU spends most of a step (a third of the debug size's FLOPs at 64 x 64).
    "allegro-vae-demo": VAEConfig(block_out_channels=(8, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
                                  sample_size=64),
}


def vae_config(name: str, **overrides) -> VAEConfig:
    """A copy of a named size, with field overrides."""
    if name not in VAE_CONFIGS:
        raise KeyError(f"unknown VAE size {name!r}; known sizes: {sorted(VAE_CONFIGS)}")
    config = dataclasses.replace(VAE_CONFIGS[name], **overrides)
    config.validate()
    return config
