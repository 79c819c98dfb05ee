"""Typed run configuration: the schema (``schema.py``), its validation and Hydra composition (``load.py``).

Importing this package registers the schema in Hydra's ConfigStore; it imports the DiT registry
but no training stack (DeepSpeed, webdataset).
"""

from allegro_train.config.load import config_dir, hydra_entry, load_config
from allegro_train.config.schema import ConfigError, TrainConfig, dit_config_for, validate

__all__ = ["ConfigError", "TrainConfig", "config_dir", "dit_config_for", "hydra_entry", "load_config", "validate"]
