"""The Allegro DiT: ``AllegroDiT`` (the network), ``DiTConfig`` (its architecture), named sizes."""

from allegro_train.models.dit.checkpointing import Checkpointing, parse_checkpointing
from allegro_train.models.dit.config import DiTConfig
from allegro_train.models.dit.flops import dit_forward_flops, dit_train_flops
from allegro_train.models.dit.registry import DIT_CONFIGS, dit_config
from allegro_train.models.dit.transformer import AllegroDiT

__all__ = [
    "AllegroDiT",
    "Checkpointing",
    "DiTConfig",
    "DIT_CONFIGS",
    "dit_config",
    "dit_forward_flops",
    "dit_train_flops",
    "parse_checkpointing",
]
