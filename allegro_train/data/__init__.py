"""Training data: synthetic latent clips for debug runs (webdataset shards and buckets come with the loader issue)."""

from allegro_train.data.synthetic import SyntheticLatents, SyntheticLoader, latent_shape

__all__ = ["SyntheticLatents", "SyntheticLoader", "latent_shape"]
