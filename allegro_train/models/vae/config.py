"""Architecture of the Allegro VideoVAE, one field per key of the diffusers ``vae/config.json``.

The defaults are the released VAE, so ``VAEConfig()`` *is* ``allegro-vae``. Field names match
``diffusers.AutoencoderKLAllegro``'s constructor, so configs round-trip unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from allegro_train.models import io

DIFFUSERS_CLASS_NAME = "AutoencoderKLAllegro"
DOWN_BLOCK = "AllegroDownBlock3D"
UP_BLOCK = "AllegroUpBlock3D"
_TUPLE_FIELDS = ("down_block_types", "up_block_types", "block_out_channels",
                 "temporal_downsample_blocks", "temporal_upsample_blocks")


@dataclass
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = (DOWN_BLOCK,) * 4
    up_block_types: tuple[str, ...] = (UP_BLOCK,) * 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    # Which encoder stages halve time, and which decoder stages (in decoder order) double it.
    temporal_downsample_blocks: tuple[bool, ...] = (True, True, False, False)
    temporal_upsample_blocks: tuple[bool, ...] = (False, True, True, False)
    latent_channels: int = 4
    layers_per_block: int = 2
    act_fn: str = "silu"
    norm_num_groups: int = 32
    temporal_compression_ratio: int = 4
    # diffusers' spatial tile size (its tiled codec reads it); our tiling has its own TilingConfig.
    sample_size: int = 320
    # Hub value 0.13 (the original code's default was 0.13235). Scale only, no shift.
    scaling_factor: float = 0.13
    force_upcast: bool = True

    @property
    def spatial_compression(self) -> int:
        """Every encoder stage but the last halves H and W."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(self.temporal_downsample_blocks)

    @property
    def compression(self) -> tuple[int, int, int]:
        """(time, height, width) pixels per latent voxel: (4, 8, 8) for the released VAE."""
        return self.temporal_compression, self.spatial_compression, self.spatial_compression

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is not an Allegro VideoVAE."""
        stages = len(self.block_out_channels)
        if stages < 1:
            raise ValueError("block_out_channels=() needs at least one stage")
        for name in ("down_block_types", "up_block_types", "temporal_downsample_blocks", "temporal_upsample_blocks"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"{name}={getattr(self, name)} must have one entry per stage of "
                                 f"block_out_channels={self.block_out_channels} ({stages})")
        if any(t != DOWN_BLOCK for t in self.down_block_types):
            raise ValueError(f"down_block_types={self.down_block_types}: only {DOWN_BLOCK!r} exists")
        if any(t != UP_BLOCK for t in self.up_block_types):
            raise ValueError(f"up_block_types={self.up_block_types}: only {UP_BLOCK!r} exists")
        if sum(self.temporal_upsample_blocks) != sum(self.temporal_downsample_blocks):
            raise ValueError(f"temporal_upsample_blocks={self.temporal_upsample_blocks} must double time as often "
                             f"as temporal_downsample_blocks={self.temporal_downsample_blocks} halves it")
        if self.temporal_compression_ratio != self.temporal_compression:
            raise ValueError(f"temporal_compression_ratio={self.temporal_compression_ratio} but "
                             f"temporal_downsample_blocks={self.temporal_downsample_blocks} compress time "
                             f"{self.temporal_compression}x")
        if self.act_fn != "silu":
            raise ValueError(f"act_fn={self.act_fn!r}: the Allegro VAE uses 'silu'")
        for name in ("in_channels", "out_channels", "latent_channels", "layers_per_block", "norm_num_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels={self.block_out_channels}: {bad} not divisible by "
                             f"norm_num_groups={self.norm_num_groups}")
        if self.scaling_factor <= 0:
            raise ValueError(f"scaling_factor={self.scaling_factor} must be > 0")

    def to_diffusers_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values = {k: list(v) if k in _TUPLE_FIELDS else v for k, v in values.items()}  # JSON lists, as diffusers'
        return {"_class_name": DIFFUSERS_CLASS_NAME, **values}

    @classmethod
    def from_diffusers_dict(cls, raw: dict[str, Any], source: str = "config") -> "VAEConfig":
        """Build from a diffusers ``config.json``; keys starting with ``_`` are metadata."""
        fields = [f.name for f in dataclasses.fields(cls)]
        values = io.config_values(raw, DIFFUSERS_CLASS_NAME, fields, source, "Allegro VAE")
        values = {k: tuple(v) if k in _TUPLE_FIELDS else v for k, v in values.items()}
        config = cls(**values)
        config.validate()
        return config
