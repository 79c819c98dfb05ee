"""Inflation: a VideoVAE from a diffusers ``AutoencoderKL`` (the Stable Diffusion 1.x image VAE).

The 2D weights are the image VAE's, key for key (its encoder/decoder/quant convs are exactly the
VideoVAE's non-temporal part). The temporal layers are then set to identity
(``VideoVAE.init_temporal_identity``), which makes the VideoVAE *exactly* the image VAE on static
clips. Why that suffices, layer by layer:

- ``temp_conv_in`` / ``temp_conv_out`` are residual (``x + conv(x)``): zero weight and bias -> ``x``.
- Every ``TemporalConvBlock`` returns ``shortcut + conv4(...)``: with ``conv4`` zeroed the output is
  the shortcut alone, i.e. the input ("mix"), its even frames ("down"), or each frame twice ("up").
  The k(2,3,3) downsampling conv therefore needs no averaging init: it sits on the zeroed branch,
  and the shortcut's frame subsampling is already exact for a static clip (every frame is equal).
- All other layers (resnets, attention, GroupNorms, up/down convs, quant convs) act on one frame
  at a time with the image VAE's weights.

So encoding a static clip of T frames gives T/4 latent frames each equal to the image latent of
the frame, and decoding a static latent gives every frame equal to the image decode. For a moving
clip the inflated encoder sees frames 0, 4, 8, ... and the decoder holds each decoded latent for 4
frames: a correct but temporally naive start that training then improves. Only ``conv4`` and the
two residual convs are zero; the other temporal convs keep their random init, so gradients reach
them after the first step.
"""

from __future__ import annotations

from typing import Any

import torch

from allegro_train.models.vae.config import VAEConfig

IMAGE_CLASS_NAME = "AutoencoderKL"
_IMAGE_DEFAULTS: dict[str, Any] = {  # diffusers' AutoencoderKL defaults for keys an old config may omit
    "in_channels": 3, "out_channels": 3, "block_out_channels": (64,), "layers_per_block": 1, "act_fn": "silu",
    "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215, "force_upcast": True,
    "down_block_types": ("DownEncoderBlock2D",), "up_block_types": ("UpDecoderBlock2D",),
}
# Keys that must hold these values for the image VAE to be the VideoVAE's 2D skeleton.
_REQUIRED = {"use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
             "shift_factor": None, "latents_mean": None, "latents_std": None}
_IGNORED = {"sample_size"}  # diffusers' own tile size for images; the VideoVAE keeps its default
# Attention names of diffusers checkpoints written before 0.14 (SD 1.x's vae/ among them).
_DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def is_temporal_key(key: str) -> bool:
    """True for the parameters an image VAE does not have (every name holds ``temp_conv``)."""
    return "temp_conv" in key


def video_config_from_image(raw: dict[str, Any], source: str, scaling_factor: float | None = None) -> VAEConfig:
    """The VideoVAE config of an ``AutoencoderKL`` config.json; Allegro's temporal layout is added.

    ``scaling_factor`` defaults to the image VAE's: the inflated latents *are* its latents.
    """
    class_name = raw.get("_class_name")
    if class_name != IMAGE_CLASS_NAME:
        raise ValueError(f"{source}: _class_name is {class_name!r}, expected {IMAGE_CLASS_NAME!r} (an image VAE)")
    known = set(_IMAGE_DEFAULTS) | set(_REQUIRED) | _IGNORED
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"{source}: unknown AutoencoderKL config keys {unknown}")
    for key, wanted in _REQUIRED.items():
        if raw.get(key, wanted) != wanted:
            raise ValueError(f"{source}: {key}={raw[key]!r}; inflation needs {key}={wanted!r} (the Allegro layout)")
    values = {**_IMAGE_DEFAULTS, **{k: v for k, v in raw.items() if k in _IMAGE_DEFAULTS}}
    bad = [t for t in values["down_block_types"] if t != "DownEncoderBlock2D"]
    bad += [t for t in values["up_block_types"] if t != "UpDecoderBlock2D"]
    if bad:
        raise ValueError(f"{source}: block types {bad}: only DownEncoderBlock2D / UpDecoderBlock2D (SD 1.x) inflate")
    if len(values["block_out_channels"]) != 4:
        raise ValueError(f"{source}: block_out_channels={values['block_out_channels']}: Allegro's temporal "
                         "layout (4x time over the first stages) needs 4 stages")
    config = VAEConfig(
        in_channels=values["in_channels"], out_channels=values["out_channels"],
        block_out_channels=tuple(values["block_out_channels"]), latent_channels=values["latent_channels"],
        layers_per_block=values["layers_per_block"], act_fn=values["act_fn"],
        norm_num_groups=values["norm_num_groups"], force_upcast=values["force_upcast"],
        scaling_factor=values["scaling_factor"] if scaling_factor is None else scaling_factor,
    )
    config.validate()
    return config


def image_state_to_video(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An AutoencoderKL state dict under VideoVAE names: identical except pre-0.14 attention names.

    Old files may also store the attention projections as 1x1 convs [C, C, 1, 1]; they become [C, C].
    """
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if "attentions" in parts and len(parts) >= 2 and parts[-2] in _DEPRECATED_ATTENTION:
            parts[-2] = _DEPRECATED_ATTENTION[parts[-2]]
            if value.ndim == 4 and parts[-1] == "weight":
                value = value[:, :, 0, 0]
        out[".".join(parts)] = value
    return out
