"""Named DiT sizes. ``allegro-2.8b`` is the released model; ``allegro-debug`` runs in seconds on a CPU."""

from __future__ import annotations

import dataclasses

from allegro_train.models.dit.config import DiTConfig

DIT_CONFIGS: dict[str, DiTConfig] = {
    "allegro-2.8b": DiTConfig(),
    # Same structure, every size shrunk: 2 blocks, 2 heads x 24 (RoPE parts of 8), 32-d captions.
    "allegro-debug": DiTConfig(
        num_attention_heads=2,
        attention_head_dim=24,
        num_layers=2,
        cross_attention_dim=48,
        caption_channels=32,
        sample_height=16,
        sample_width=16,
        sample_frames=4,
        interpolation_scale_t=1.0,
        interpolation_scale_h=1.0,
        interpolation_scale_w=1.0,
    ),
}


def dit_config(name: str, **overrides) -> DiTConfig:
    """A copy of a named size, with field overrides (e.g. RoPE interpolation scales per stage)."""
    if name not in DIT_CONFIGS:
        raise KeyError(f"unknown DiT size {name!r}; known sizes: {sorted(DIT_CONFIGS)}")
    config = dataclasses.replace(DIT_CONFIGS[name], **overrides)
    config.validate()
    return config
