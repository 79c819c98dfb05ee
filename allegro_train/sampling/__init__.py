"""Sampling from Allegro checkpoints and export to a diffusers pipeline folder.

``Sampler`` (prompt -> uint8 frames; with a TI2V transformer, prompt + ``Condition``) is the one path
both ``launch/sample.py`` and the trainer's validation sampling call; ``export_pipeline`` writes the
folder ``diffusers.AllegroPipeline`` loads.
"""

from allegro_train.sampling.components import Components, resolve_components
from allegro_train.sampling.conditioning import Condition, sample_windows
from allegro_train.sampling.export import export_pipeline
from allegro_train.sampling.sampler import Sampler, latent_grid
from allegro_train.sampling.schedulers import SCHEDULERS, build_scheduler

__all__ = ["Components", "Condition", "SCHEDULERS", "Sampler", "build_scheduler", "export_pipeline", "latent_grid",
           "resolve_components", "sample_windows"]
