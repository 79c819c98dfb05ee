"""Typed run configuration: the schemas (``schema.py`` for the DiT, ``vae_schema.py`` for the VAE), their
validation and Hydra composition (``load.py``).

Importing this package registers the schema in Hydra's ConfigStore; it imports the DiT registry
but no training stack (DeepSpeed, webdataset).
"""

from allegro_train.config.load import VAE_CONFIG_NAME, config_dir, hydra_entry, load_config, load_vae_config
from allegro_train.config.schema import ConfigError, TrainConfig, dit_config_for, validate
from allegro_train.config.vae_schema import VAETrainConfig, validate_vae

__all__ = ["ConfigError", "TrainConfig", "VAETrainConfig", "VAE_CONFIG_NAME", "config_dir", "dit_config_for",
           "hydra_entry", "load_config", "load_vae_config", "validate", "validate_vae"]
