"""AllegroTI2VDiT: the released text-and-image-to-video (TI2V) Allegro transformer.

The T2V DiT with three more inputs, each through its own patch embedding followed by a bias-free
Linear that starts at zero (the released ``transformer_3d_allegro_ti2v.py``):

    input [B, 3C, T, H, W] = [noisy latents | VAE latents of the masked clip | mask]   (C = 4)
    x  = pos_embed(noisy) + pos_embed_masked_video(masked) + pos_embed_mask(mask)      # [B, N, D]
    e' = embedded timestep + mean over tokens of pos_embed_first_frame(noisy[:, :, :1])  # [B, D]
    the T2V blocks on x; the final layer modulated by e'

The mask is 1 where frames are to be generated and 0 where they are given; ``condition_mask``
lays it out in latent space as the release does. With the Linears at zero the extra inputs add
exactly 0, so a T2V checkpoint converted by ``t2v_to_ti2v_state_dict`` (the extra patch
embeddings copied from ``pos_embed``, as the released ``train_ti2v.py`` does) computes exactly
what the T2V model did, and training opens the conditioning from there.

Parameter names are the released ones (``pos_embed_mask.0.proj.weight``, ``pos_embed_mask.1.weight``,
...), and ``config.json`` is written in the released class's format
(``AllegroTransformerTI2V3DModel``: ``sample_size``, ``sample_size_t``, ``use_rope``, ...), so
the released TI2V ``transformer/`` folder loads and our saves load in the released code.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from allegro_train.models import io
from allegro_train.models.dit.config import DIFFUSERS_CLASS_NAME, DiTConfig
from allegro_train.models.dit.embeddings import PatchEmbed
from allegro_train.models.dit.transformer import AllegroDiT

TI2V_CLASS_NAME = "AllegroTransformerTI2V3DModel"
CONDITION_EMBEDDINGS = ("pos_embed_masked_video", "pos_embed_mask", "pos_embed_first_frame")

# Keys of the released class's config.json that must hold these values for the network to be this
# one (the released class also builds other variants from them).
_RELEASED_FIXED = {"norm_type": "ada_norm_single", "use_rope": True, "only_cross_attention": False,
                   "double_self_attention": False, "upcast_attention": False, "use_linear_projection": False,
                   "downsampler": None}
# Keys that choose kernels or tokenizer lengths in the released code and change no number here.
_RELEASED_FREE = {"sa_attention_mode": "flash", "ca_attention_mode": "xformers", "model_max_length": 300,
                  "num_embeds_ada_norm": 1000, "use_additional_conditions": None}
_SAME_NAME = ("patch_size", "patch_size_t", "num_attention_heads", "attention_head_dim", "in_channels",
              "out_channels", "num_layers", "dropout", "cross_attention_dim", "attention_bias", "activation_fn",
              "norm_elementwise_affine", "norm_eps", "caption_channels", "interpolation_scale_h",
              "interpolation_scale_w", "interpolation_scale_t")


class ConditionEmbed(nn.ModuleList):
    """[PatchEmbed, Linear(D, D, bias=False)]: latents [B, C, T, H, W] -> tokens [B, T*H/p*W/p, D].

    A ModuleList so the parameter names are the released ``<name>.0.proj.*`` and ``<name>.1.weight``.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__([PatchEmbed(in_channels, dim, patch_size), nn.Linear(dim, dim, bias=False)])
        nn.init.zeros_(self[1].weight)  # the condition starts closed

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self[1](self[0](latents))


class AllegroTI2VDiT(AllegroDiT):
    def __init__(self, config: DiTConfig, attention_backend: str = "sdpa"):
        super().__init__(config, attention_backend)
        for name in CONDITION_EMBEDDINGS:
            setattr(self, name, ConditionEmbed(config.in_channels, config.inner_dim, config.patch_size))

    def init_weights(self) -> None:
        """The T2V init (``AllegroDiT.init_weights``); the condition patch embeddings like ``pos_embed``,
        their Linears back to zero, so the untrained TI2V model ignores its condition."""
        super().init_weights()
        for name in CONDITION_EMBEDDINGS:
            embed: ConditionEmbed = getattr(self, name)
            proj = embed[0].proj
            nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
            nn.init.zeros_(proj.bias)
            nn.init.zeros_(embed[1].weight)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """latents [B, 3C, T, H, W]: noisy latents, masked-clip latents and mask (``condition_mask``),
        concatenated on channels as the released pipeline does; the rest as ``AllegroDiT``."""
        channels = self.config.in_channels
        if latents.shape[1] != 3 * channels:
            raise ValueError(f"TI2V input has {latents.shape[1]} channels; expected 3 x {channels}: "
                             "[noisy latents, masked-clip latents, mask]")
        noisy, masked_video, mask = latents.split(channels, dim=1)  # each [B, C, T, H, W]
        grid = self.token_grid(noisy)
        x = self.pos_embed(noisy) + self.pos_embed_masked_video(masked_video) + self.pos_embed_mask(mask)  # [B, N, D]
        modulation, embedded_timestep = self.adaln_single(timestep, x.dtype)  # [B, 6D], [B, D]
        # As released: the *noisy* first frame's tokens, averaged, shift the final layer's modulation.
        first_frame = self.pos_embed_first_frame(noisy[:, :, :1]).mean(dim=1)  # [B, D]
        return self.denoise_tokens(x, grid, modulation, embedded_timestep + first_frame, text_states, text_mask)

    # ---------------------------------------------------------------- released folders
    # from_pretrained / save_pretrained are AllegroDiT's; only the config.json format differs.

    @classmethod
    def config_from_dict(cls, raw: dict[str, Any], source: str) -> DiTConfig:
        return config_from_released(raw, source)

    def config_dict(self) -> dict[str, Any]:
        return config_to_released(self.config)


def config_to_released(config: DiTConfig) -> dict[str, Any]:
    """``DiTConfig`` -> the released TI2V class's ``config.json`` dict."""
    values = {name: getattr(config, name) for name in _SAME_NAME}
    return {"_class_name": TI2V_CLASS_NAME, **values, **_RELEASED_FIXED, **_RELEASED_FREE,
            "sample_size": [config.sample_height, config.sample_width], "sample_size_t": config.sample_frames}


def config_from_released(raw: dict[str, Any], source: str = "config") -> DiTConfig:
    """The released TI2V ``config.json`` -> ``DiTConfig``; a key or value this network is not is an error."""
    fields = set(_SAME_NAME) | set(_RELEASED_FIXED) | set(_RELEASED_FREE) | {"sample_size", "sample_size_t"}
    values = io.config_values(raw, TI2V_CLASS_NAME, fields, source, "Allegro TI2V transformer")
    for key, expected in _RELEASED_FIXED.items():
        if key in values and values[key] != expected:
            raise ValueError(f"{source}: {key}={values[key]!r}; the Allegro TI2V network has {key}={expected!r}")
    if values.get("use_additional_conditions"):
        raise ValueError(f"{source}: use_additional_conditions=True is not part of the Allegro TI2V network")
    size = values.get("sample_size", [DiTConfig.sample_height, DiTConfig.sample_width])
    height, width = (size, size) if isinstance(size, int) else size
    frames = values.get("sample_size_t", DiTConfig.sample_frames)
    kwargs = {k: values[k] for k in _SAME_NAME if k in values}
    if kwargs.get("out_channels", 0) is None:  # the released class: None means in_channels
        kwargs["out_channels"] = kwargs.get("in_channels", DiTConfig.in_channels)
    # Unset RoPE scales are derived from the sample grid with the released class's formulas.
    derived = {"interpolation_scale_t": (frames - 1) // 16 + 1 if frames % 2 else frames / 16,
               "interpolation_scale_h": height / 30, "interpolation_scale_w": width / 40}
    for key, value in derived.items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    config = DiTConfig(**kwargs, sample_height=height, sample_width=width, sample_frames=frames)
    config.validate()
    return config


def t2v_to_ti2v_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A T2V state dict -> the TI2V one: each condition patch embedding a copy of ``pos_embed``, each
    Linear zero (as the released ``train_ti2v.py`` starts from T2V weights)."""
    if "pos_embed.proj.weight" not in state:
        raise KeyError("not an Allegro T2V state dict: no pos_embed.proj.weight")
    clash = sorted(k for k in state if k.startswith(CONDITION_EMBEDDINGS))
    if clash:
        raise KeyError(f"already a TI2V state dict (has {clash[:3]}...)")
    weight, bias = state["pos_embed.proj.weight"], state["pos_embed.proj.bias"]  # [D, C, p, p], [D]
    dim = weight.shape[0]
    out = dict(state)
    for name in CONDITION_EMBEDDINGS:
        out[f"{name}.0.proj.weight"] = weight.clone()
        out[f"{name}.0.proj.bias"] = bias.clone()
        out[f"{name}.1.weight"] = torch.zeros(dim, dim, dtype=weight.dtype)
    return out


def transformer_class(folder: str | os.PathLike) -> type[AllegroDiT]:
    """``AllegroDiT`` or ``AllegroTI2VDiT``, from a ``transformer/`` folder's ``_class_name`` (no weights read)."""
    folder = io.model_folder(folder, "transformer")
    name = io.read_config(folder).get("_class_name", DIFFUSERS_CLASS_NAME)
    classes = {DIFFUSERS_CLASS_NAME: AllegroDiT, TI2V_CLASS_NAME: AllegroTI2VDiT}
    if name not in classes:
        raise ValueError(f"{folder / io.CONFIG_NAME}: _class_name {name!r} is neither {sorted(classes)}")
    return classes[name]


def convert_t2v_to_ti2v(source: str | os.PathLike, target: str | os.PathLike,
                        max_shard_size: int | str = io.DEFAULT_MAX_SHARD_SIZE) -> AllegroTI2VDiT:
    """Write a TI2V ``transformer/`` folder at ``target`` from a T2V one (or a pipeline folder holding one).

    Dtypes are kept (the released bf16 weights stay bf16). Returns the converted model.
    """
    t2v = AllegroDiT.from_pretrained(source)
    model = ti2v_from_t2v(t2v)
    model.save_pretrained(target, max_shard_size)
    return model


def ti2v_from_t2v(t2v: AllegroDiT) -> AllegroTI2VDiT:
    """The TI2V model that computes exactly what ``t2v`` does (zero condition Linears), same dtype, device,
    checkpointing policy and q/k/v fusion."""
    if isinstance(t2v, AllegroTI2VDiT):
        raise TypeError("the model is already a TI2V DiT")
    state = t2v_to_ti2v_state_dict(t2v.state_dict())
    with torch.device("meta"):
        model = AllegroTI2VDiT(t2v.config)
    model.load_state_dict(state, assign=True)
    model.checkpointing = t2v.checkpointing
    model.set_attention_backend(t2v.transformer_blocks[0].attn1.core.backend)
    if t2v.transformer_blocks[0].attn1.fused:  # the state dict above was in diffusers' keys: fuse again
        model.fuse_qkv()
    return model


def condition_mask(generate: torch.Tensor, grid: tuple[int, int, int], channels: int) -> torch.Tensor:
    """Pixel frames to generate [B, T] (1 generate, 0 given) -> the mask input [B, channels, T', H', W'].

    As the released code builds it (``prepare_mask_masked_video`` of its pipeline and
    ``preprocess_x_for_ti2v`` of ``train_ti2v.py``): the per-frame pixel mask is resized to
    H' x W' and then *reshaped*, not pooled, from T = channels x T' frames to [channels, T'], so
    channel c at latent frame t is pixel frame c * T' + t. (Released: ``mask.view(B, 4, T', H', W')``
    with 4 the VAE's time compression, which equals the 4 latent channels the mask embedding takes.)
    The values are exact 0 / 1 here; the released bilinear resize of a constant frame can differ
    from them by a rounding error.
    """
    batch, frames = generate.shape
    latent_frames, height, width = grid
    if frames != channels * latent_frames:
        raise ValueError(f"{frames} pixel frames cannot be laid out as {channels} mask channels x {latent_frames} "
                         f"latent frames: the released TI2V mask needs frames = {channels} x latent frames")
    mask = generate.reshape(batch, channels, latent_frames, 1, 1)  # channel c, frame t <- pixel c*T' + t
    return mask.expand(batch, channels, latent_frames, height, width).contiguous()
