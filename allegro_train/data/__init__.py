"""Training data: WebDataset shards streamed into buckets (``build_loader``) and synthetic latents for debug runs.

``build_loader`` is imported on first use, so ``import allegro_train.data`` (which the config
schema does, for ``latent_shape``) stays free of webdataset and the video decoders.
"""

from typing import Any

from allegro_train.data.buckets import latent_shape
from allegro_train.data.synthetic import SyntheticLatents, write_synthetic_shards

__all__ = ["SyntheticLatents", "build_loader", "latent_shape", "write_synthetic_shards"]


def __getattr__(name: str) -> Any:
    if name == "build_loader":
        from allegro_train.data.loader import build_loader

        return build_loader
    raise AttributeError(f"module 'allegro_train.data' has no attribute {name!r}")
