"""The Allegro DiT: ``AllegroDiT`` (the network), ``AllegroTI2VDiT`` (its image-to-video variant),
``DiTConfig`` (the architecture), named sizes."""

from allegro_train.models.dit.checkpointing import Checkpointing, parse_checkpointing
from allegro_train.models.dit.config import DiTConfig
from allegro_train.models.dit.flops import dit_forward_flops, dit_train_flops
from allegro_train.models.dit.registry import DIT_CONFIGS, dit_config
from allegro_train.models.dit.transformer import AllegroDiT
from allegro_train.models.dit.ti2v import (AllegroTI2VDiT, condition_mask, convert_t2v_to_ti2v, ti2v_from_t2v,
                                          transformer_class)

__all__ = [
    "AllegroDiT",
    "AllegroTI2VDiT",
    "Checkpointing",
    "DiTConfig",
    "condition_mask",
    "convert_t2v_to_ti2v",
    "DIT_CONFIGS",
    "dit_config",
    "dit_forward_flops",
    "dit_train_flops",
    "parse_checkpointing",
    "ti2v_from_t2v",
    "transformer_class",
]
