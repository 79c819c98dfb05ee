"""The Allegro VideoVAE: ``VideoVAE`` (the network), ``VAEConfig`` (its architecture), named sizes, tiling."""

from allegro_train.models.vae.autoencoder import DiagonalGaussian, VideoVAE
from allegro_train.models.vae.config import VAEConfig
from allegro_train.models.vae.registry import VAE_CONFIGS, vae_config
from allegro_train.models.vae.tiling import TilingConfig

__all__ = ["DiagonalGaussian", "TilingConfig", "VAEConfig", "VAE_CONFIGS", "VideoVAE", "vae_config"]
