"""VideoVAE: the released Allegro VAE as a plain ``nn.Module``; ``DiagonalGaussian``, its posterior.

    video [B, 3, T, H, W] in [-1, 1] --encoder, quant_conv--> moments [B, 8, T/4, H/8, W/8]
        --> DiagonalGaussian(mean, logvar) --sample / mode--> z [B, 4, T/4, H/8, W/8] (unscaled)
    z --post_quant_conv, decoder--> video [B, 3, T, H, W]

The diffusion model sees ``z * scaling_factor``; this class never scales. The state dict is
diffusers' ``AutoencoderKLAllegro`` key for key. Unlike diffusers, encode/decode also run untiled
(the default); ``enable_tiling`` switches to ``tiling.py``, which covers any clip size.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from allegro_train.models import io
from allegro_train.models.vae import inflate
from allegro_train.models.vae.blocks import from_frames, to_frames
from allegro_train.models.vae.coders import Decoder3D, Encoder3D
from allegro_train.models.vae.config import VAEConfig
from allegro_train.models.vae.temporal import TemporalConvBlock
from allegro_train.models.vae.tiling import TilingConfig, tiled_decode, tiled_encode


class DiagonalGaussian:
    """q(z | x) with diagonal covariance, from moments [B, 2C, ...] = (mean, log-variance).

    The log-variance is clamped to [-30, 20], as diffusers does, so ``exp`` stays finite.
    """

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)  # [B, C, T, H, W] each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * eps; eps is drawn on the generator's device, so a CPU generator reproduces
        diffusers' ``randn_tensor`` draw exactly."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over every latent voxel -> [B]."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).flatten(1).sum(1)


class VideoVAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder3D(config)
        self.decoder = Decoder3D(config)
        self.quant_conv = nn.Conv2d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)
        self.tiling: TilingConfig | None = None

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    # ---------------------------------------------------------------- set-up

    def init_temporal_identity(self) -> None:
        """Zero every temporal residual branch: the network is then the 2D VAE run frame by frame
        (with frames subsampled / duplicated at the temporal down / up layers). See ``inflate.py``."""
        for module in self.modules():
            if isinstance(module, TemporalConvBlock):
                module.init_identity()
        for conv in (self.encoder.temp_conv_in, self.encoder.temp_conv_out,
                     self.decoder.temp_conv_in, self.decoder.temp_conv_out):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each encoder/decoder stage's activations in backward."""
        self.encoder.checkpointing = self.decoder.checkpointing = bool(enabled)

    def enable_tiling(self, tile: tuple[int, int, int] = TilingConfig.tile,
                      overlap: tuple[int, int, int] = TilingConfig.overlap) -> None:
        """Encode/decode in overlapping tiles of ``tile`` pixels (frames, height, width)."""
        config = TilingConfig(tuple(tile), tuple(overlap))
        config.validate(self.config.compression)
        self.tiling = config

    def disable_tiling(self) -> None:
        self.tiling = None

    # ---------------------------------------------------------------- encode / decode

    def _check_video(self, video: torch.Tensor) -> None:
        c = self.config
        if video.ndim != 5 or video.shape[1] != c.in_channels:
            raise ValueError(f"video of shape {tuple(video.shape)}: expected [B, {c.in_channels}, T, H, W]")
        for axis, n, factor in zip(("T", "H", "W"), video.shape[2:], c.compression):
            if n < factor or n % factor:
                raise ValueError(f"video of shape {tuple(video.shape)}: {axis}={n} must be a positive multiple of "
                                 f"{factor} (the VAE compresses {axis} {factor}x); crop or pad the clip first")

    def as_clip(self, video: torch.Tensor) -> torch.Tensor:
        """An image batch [B, C, 1, H, W] as a still clip [B, C, t, H, W] of one latent frame
        (t = the time compression, 4); clips pass unchanged. The VAE only codes whole groups of
        t frames, so images are trained on and encoded this way."""
        if video.shape[2] == 1:
            return video.expand(-1, -1, self.config.temporal_compression, -1, -1)
        return video

    def _encode_moments(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] -> moments [B, 2*latent, T/4, H/8, W/8], untiled."""
        h = self.encoder(video)
        return from_frames(self.quant_conv(to_frames(h)), video.shape[0])

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent, T', H', W'] -> [B, 3, 4T', 8H', 8W'], untiled."""
        return self.decoder(from_frames(self.post_quant_conv(to_frames(z)), z.shape[0]))

    def encode(self, video: torch.Tensor) -> DiagonalGaussian:
        """video [B, 3, T, H, W] in [-1, 1] (T % 4 == 0, H % 8 == 0, W % 8 == 0) -> posterior."""
        self._check_video(video)
        if self.tiling is None:
            return DiagonalGaussian(self._encode_moments(video))
        return DiagonalGaussian(tiled_encode(self._encode_moments, video, self.tiling, self.config.compression))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, 4, T', H', W'] (unscaled: divide by ``scaling_factor`` first) -> [B, 3, 4T', 8H', 8W']."""
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels or 0 in z.shape:
            raise ValueError(f"latents of shape {tuple(z.shape)}: expected [B, {self.config.latent_channels}, T, H, W]")
        if self.tiling is None:
            return self._decode(z)
        return tiled_decode(self._decode, z, self.tiling, self.config.compression)

    def forward(self, video: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct: video -> (reconstruction [B, 3, T, H, W], posterior), for training."""
        posterior = self.encode(video)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    # ---------------------------------------------------------------- diffusers folders

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu") -> "VideoVAE":
        """Load a diffusers ``vae/`` folder (AutoencoderKLAllegro) or a pipeline folder holding one.

        Built on the meta device and filled from safetensors in place. Dtypes are kept unless
        ``torch_dtype`` is given (the released VAE is fp32 and is meant to run in fp32).
        """
        folder = io.model_folder(folder, "vae")
        config = VAEConfig.from_diffusers_dict(io.read_config(folder), source=str(folder / io.CONFIG_NAME))
        return io.load_model(lambda: cls(config), folder, torch_dtype, device)

    def save_pretrained(self, folder: str | os.PathLike, max_shard_size: int | str = io.DEFAULT_MAX_SHARD_SIZE) -> None:
        """Write a folder that ``diffusers.AutoencoderKLAllegro.from_pretrained`` loads."""
        io.save_state_dict(self.state_dict(), folder, max_shard_size)
        io.write_config(self.config.to_diffusers_dict(), folder)

    @classmethod
    def from_image_vae(cls, folder: str | os.PathLike, scaling_factor: float | None = None) -> "VideoVAE":
        """Inflate a diffusers ``AutoencoderKL`` folder (SD 1.x layout; or a pipeline folder holding
        ``vae/``): its 2D weights, temporal layers at identity, so static clips code exactly as the
        image VAE codes each frame. ``scaling_factor`` defaults to the image VAE's."""
        folder = io.model_folder(folder, "vae")
        config = inflate.video_config_from_image(io.read_config(folder), str(folder / io.CONFIG_NAME), scaling_factor)
        model = cls(config)
        state = inflate.image_state_to_video(io.load_state_dict(folder))
        spatial_keys = [k for k in model.state_dict() if not inflate.is_temporal_key(k)]
        io.check_keys(spatial_keys, state.keys(), str(folder))
        model.load_state_dict(state, strict=False)  # temporal keys, all missing, checked just above
        model.init_temporal_identity()
        return model

