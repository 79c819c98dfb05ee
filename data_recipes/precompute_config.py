"""The typed config of a precompute run (raw shards -> VAE moments + T5 states), apart from curation's.

Loader knobs (bucket choice, frame sampling, decoding) take their defaults from the training
config's ``DataConfig``, so a precompute picks clips exactly as ``data.precomputed=false`` would.
``data_recipes/configs/precompute.yaml`` only composes; ``validate`` checks what OmegaConf cannot.
Importing this module registers the schema in Hydra's ConfigStore as ``precompute_schema``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Sequence, cast

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from allegro_train.config.bounds import Bounds, bound_failures
from allegro_train.config.load import compose_config
from allegro_train.config.schema import BucketConfig, DataConfig, DecodeBackend, Precision
from allegro_train.models.vae import TilingConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIG_NAME = "precompute"


class PrecomputeConfigError(ValueError):
    """A precompute config that cannot run; the message names each key and its value."""


class CaptionText(str, Enum):
    """What T5 reads. ``clean`` is the released pipeline's inference default (``clean_caption=True``),
    so training sees prompts prepared as sampling will prepare them."""

    clean = "clean"  # allegro_train.models.text.clean_caption
    lower = "lower"  # lower-case and strip: the pipeline with clean_caption=False
    verbatim = "verbatim"


@dataclass
class VAETilingConfig:
    enabled: bool = False  # tile clips larger than one tile (88x720p needs it on an 80 GB GPU)
    tile: list[int] = field(default_factory=lambda: list(TilingConfig.tile))  # pixels (frames, height, width)
    overlap: list[int] = field(default_factory=lambda: list(TilingConfig.overlap))


@dataclass
class PrecomputeConfig:
    shards: str = MISSING  # raw input shards: a path, glob or brace pattern ({000000..000099})
    output_dir: str = MISSING  # one output tar per input tar (same name), null.t5.npy, summary.json
    vae: str = MISSING  # a diffusers vae/ folder or a pipeline folder holding one
    text_encoder: str = MISSING  # a pipeline folder (text_encoder/ + tokenizer/) or a T5 checkpoint folder
    buckets: list[BucketConfig] = MISSING  # the pixel sizes clips are cut to; copy the training stage's data.buckets
    max_upscale: float = DataConfig.max_upscale
    frame_stride: int = DataConfig.frame_stride
    target_fps: Optional[float] = DataConfig.target_fps
    decode_backend: DecodeBackend = DataConfig.decode_backend
    seed: int = 0  # picks each clip's frame window (one window a clip: the latents fix it)
    max_length: int = DataConfig.text_len  # T5 tokens
    caption_text: CaptionText = CaptionText.clean
    device: str = "cuda"
    vae_dtype: Precision = Precision.fp32  # the released recipe encodes in fp32
    text_dtype: Precision = Precision.bf16  # and runs T5 in bf16
    vae_tiling: VAETilingConfig = field(default_factory=VAETilingConfig)
    # Split the input shards over processes: this one converts shards[rank::world_size].
    rank: int = 0
    world_size: int = 1
    shard_retries: int = DataConfig.shard_retries


ConfigStore.instance().store(name="precompute_schema", node=PrecomputeConfig)

# Keys whose values shape the stored arrays: a rerun into the same output_dir must keep them.
_BOUNDS: Bounds = [
    (("max_length", "frame_stride"), lambda v: v >= 1, "must be >= 1"),
    (("max_upscale",), lambda v: v >= 1, "must be >= 1 (1: never enlarge a clip)"),
]

CONTENT_KEYS = ("vae", "text_encoder", "buckets", "max_upscale", "frame_stride", "target_fps", "seed",
                "max_length", "caption_text", "vae_dtype", "text_dtype", "vae_tiling")


def validate(cfg: PrecomputeConfig) -> None:
    """Raise ``PrecomputeConfigError`` listing every key that type-checks but cannot run."""
    if isinstance(cfg, DictConfig):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise PrecomputeConfigError(f"config values required but not set (???): {', '.join(missing)}")
    problems: list[str] = []

    def check(ok: bool, key: str, value: Any, why: str) -> None:
        if not ok:
            problems.append(f"{key}={value!r}: {why}")

    for key in ("vae", "text_encoder"):
        check(Path(getattr(cfg, key)).is_dir(), key, getattr(cfg, key), "is not a folder")
    check(bool(cfg.buckets), "buckets", cfg.buckets, "needs at least one bucket")
    for key, value, why in bound_failures(cfg, _BOUNDS):
        check(False, key, value, why)
    check(0 <= cfg.rank < cfg.world_size, "rank", cfg.rank, f"must be in [0, world_size={cfg.world_size})")
    check(len(cfg.vae_tiling.tile) == 3 and len(cfg.vae_tiling.overlap) == 3, "vae_tiling",
          dict(tile=list(cfg.vae_tiling.tile), overlap=list(cfg.vae_tiling.overlap)), "give (frames, height, width)")
    if cfg.device.startswith("cuda"):
        import torch

        check(torch.cuda.is_available(), "device", cfg.device, "CUDA is not available here; pass device=cpu")
    if problems:
        raise PrecomputeConfigError("invalid precompute config:\n  " + "\n  ".join(problems))


def load_config(overrides: Sequence[str] = ()) -> PrecomputeConfig:
    """Compose ``configs/precompute.yaml`` with Hydra-syntax ``overrides`` and validate it."""
    cfg = compose_config(CONFIG_DIR, CONFIG_NAME, overrides, PrecomputeConfigError)
    validate(cast(PrecomputeConfig, cfg))
    return cast(PrecomputeConfig, cfg)
