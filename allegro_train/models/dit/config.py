"""Architecture of the Allegro DiT, one field per key of the diffusers ``transformer/config.json``.

The defaults are the released 2.8B model, so ``DiTConfig()`` *is* ``allegro-2.8b``. Field names
match ``diffusers.AllegroTransformer3DModel``'s constructor, so configs round-trip unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from allegro_train.models import io

DIFFUSERS_CLASS_NAME = "AllegroTransformer3DModel"


@dataclass
class DiTConfig:
    patch_size: int = 2
    patch_size_t: int = 1
    num_attention_heads: int = 24
    attention_head_dim: int = 96
    in_channels: int = 4
    out_channels: int = 4
    num_layers: int = 32
    dropout: float = 0.0
    cross_attention_dim: int = 2304
    attention_bias: bool = True
    # The latent grid the model was trained at; informational (RoPE is computed from the input).
    sample_height: int = 90
    sample_width: int = 160
    sample_frames: int = 22
    activation_fn: str = "gelu-approximate"
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-6
    caption_channels: int = 4096
    # RoPE positions are divided by these: 2.2/2.0/2.0 for the 88x720p model.
    interpolation_scale_h: float = 2.0
    interpolation_scale_w: float = 2.0
    interpolation_scale_t: float = 2.2

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is not an Allegro DiT."""
        if self.patch_size_t != 1:
            raise ValueError(f"patch_size_t={self.patch_size_t}: the Allegro patch embedding is per frame (1)")
        if self.attention_head_dim % 6:
            raise ValueError(
                f"attention_head_dim={self.attention_head_dim}: 3D RoPE splits the head dim into three "
                "even parts (t, h, w), so it must be divisible by 6"
            )
        if self.cross_attention_dim != self.inner_dim:
            raise ValueError(
                f"cross_attention_dim={self.cross_attention_dim} must equal heads x head dim "
                f"= {self.inner_dim}: text is projected to the model width before cross-attention"
            )
        if self.activation_fn != "gelu-approximate":
            raise ValueError(f"activation_fn={self.activation_fn!r}: only 'gelu-approximate' is an Allegro FFN")
        if self.norm_elementwise_affine:
            raise ValueError("norm_elementwise_affine=True: Allegro's block LayerNorms have no affine parameters")
        for name in ("patch_size", "num_attention_heads", "in_channels", "out_channels", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("interpolation_scale_t", "interpolation_scale_h", "interpolation_scale_w"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")

    def to_diffusers_dict(self) -> dict[str, Any]:
        return {"_class_name": DIFFUSERS_CLASS_NAME, **dataclasses.asdict(self)}

    @classmethod
    def from_diffusers_dict(cls, raw: dict[str, Any], source: str = "config") -> "DiTConfig":
        """Build from a diffusers ``config.json``; keys starting with ``_`` are metadata."""
        fields = [f.name for f in dataclasses.fields(cls)]
        values = io.config_values(raw, DIFFUSERS_CLASS_NAME, fields, source, "Allegro transformer")
        _fill_derived_interpolation_scales(values)
        config = cls(**values)
        config.validate()
        return config


def _fill_derived_interpolation_scales(values: dict[str, Any]) -> None:
    """diffusers derives a ``None`` interpolation scale from the sample grid; do the same."""
    defaults = DiTConfig()
    frames = values.get("sample_frames", defaults.sample_frames)
    if values.get("interpolation_scale_t", 0) is None:
        values["interpolation_scale_t"] = (frames - 1) // 16 + 1 if frames % 2 == 1 else frames // 16
    if values.get("interpolation_scale_h", 0) is None:
        values["interpolation_scale_h"] = values.get("sample_height", defaults.sample_height) / 30
    if values.get("interpolation_scale_w", 0) is None:
        values["interpolation_scale_w"] = values.get("sample_width", defaults.sample_width) / 40
