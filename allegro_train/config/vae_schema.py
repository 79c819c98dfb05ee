"""The typed config of VideoVAE training (``launch/train_vae.py``, root ``configs/train_vae.yaml``).

It reuses the DiT schema's groups that every trainer shares (run, train, data, optim, parallel,
checkpoint, logging, stage) and adds four of its own: ``vae`` (where the weights come from and
which of them train), ``loss`` (L1, KL, LPIPS weights), ``discriminator`` (the optional 3D
PatchGAN) and ``validation`` (held-out clips: PSNR, SSIM, side-by-side mp4s). Registered in
Hydra's ConfigStore as ``vae_train_schema``; every default lives here.

Loss weights follow Stable Diffusion's VAE recipe (taming-transformers' LPIPSWithDiscriminator:
KL 1e-6, perceptual 1.0, GAN 0.5 with the adaptive weight, hinge loss); Allegro's own VAE recipe
is unpublished beyond "the temporal layers train", which is what ``vae_pretrain`` sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore

from allegro_train.config.bounds import Bounds
from allegro_train.config.schema import (COMMON_BOUNDS, TWO_BETAS, CheckpointConfig, DataConfig, LoggingConfig,
                                         LoopConfig, OptimConfig, ParallelConfig, Problems, RunConfig, StageConfig,
                                         _StrEnum, check_buckets, check_loop_and_parallel, check_structure)
from allegro_train.models.vae.registry import VAE_CONFIGS


class Trainable(_StrEnum):
    all = "all"
    temporal = "temporal"  # the released recipe: the inflated 2D (SD) weights stay frozen


@dataclass
class VAEModelConfig:
    """Where the VideoVAE starts: ``pretrained`` (a diffusers vae/ folder), else ``image_vae`` (an SD 1.x
    AutoencoderKL folder, inflated with its temporal layers at identity), else the registry size ``name``
    freshly initialised."""

    name: str = "allegro-vae-debug"  # a key of allegro_train.models.vae.VAE_CONFIGS
    pretrained: Optional[str] = None
    image_vae: Optional[str] = None
    trainable: Trainable = Trainable.all
    activation_checkpointing: bool = False  # recompute each encoder/decoder stage in backward
    # Decode a posterior sample, as SD's VAE trains (false: decode the mean).
    sample_posterior: bool = True


@dataclass
class VAELossConfig:
    """Per-pixel means: SD's summed loss divided by the pixel count, so its weights keep their meaning."""

    l1: float = 1.0
    kl: float = 1e-6  # on the KL summed over latent voxels, divided by the pixel count
    lpips: float = 0.0  # SD uses 1.0; > 0 needs lpips_path
    # One safetensors file: torchvision VGG16 ``features.*`` and the lpips package's heads
    # ``lin{0..4}.model.1.weight`` (docs/vae.md, allegro_train/models/lpips.py). Never downloaded.
    lpips_path: Optional[str] = None


@dataclass
class DiscriminatorConfig:
    """A 3D PatchGAN on clips, hinge loss; off by default (SD turns it on after 50k steps)."""

    enabled: bool = False
    start_step: int = 0  # the first start_step steps train without it; it joins from step start_step + 1
    weight: float = 0.5  # on the generator's GAN term (times the adaptive weight when that is on)
    adaptive_weight: bool = True  # |grad nll| / |grad g_loss| at the decoder's last trained layer
    max_adaptive_weight: float = 1e4
    channels: int = 64
    layers: int = 3  # stride-2 layers after the first conv
    lr: Optional[float] = None  # None: optim.lr
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])


@dataclass
class VAEValidationConfig:
    every_steps: Optional[int] = None  # None: no validation
    shards: Optional[list[str]] = None  # raw held-out shards, read once through data.buckets
    num_clips: int = 4
    num_videos: int = 2  # side-by-side mp4s (input | reconstruction) written and logged, of the first clips
    fps: int = 8


@dataclass
class VAETrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(precomputed=False))
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    vae: VAEModelConfig = field(default_factory=VAEModelConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    validation: VAEValidationConfig = field(default_factory=VAEValidationConfig)


ConfigStore.instance().store(name="vae_train_schema", node=VAETrainConfig)

_VAE_BOUNDS: Bounds = [
    (("loss.l1", "loss.kl", "loss.lpips", "discriminator.weight", "discriminator.start_step"),
     lambda v: v >= 0, "must be >= 0"),
    (("discriminator.max_adaptive_weight",), lambda v: v > 0, "must be > 0"),
    (("discriminator.channels", "discriminator.layers", "validation.num_clips", "validation.fps"),
     lambda v: v >= 1, "must be >= 1"),
    (("validation.num_videos",), lambda v: v >= 0, "must be >= 0"),
    (("discriminator.lr", "validation.every_steps"), lambda v: v is None or v > 0, "must be > 0 (or null)"),
    (("discriminator.betas",), *TWO_BETAS),
]


def validate_vae(cfg: VAETrainConfig) -> None:
    """Raise ``ConfigError`` naming every key that type-checks but cannot train; reads no weights
    (it only checks that the named files and folders exist)."""
    check_structure(cfg, VAETrainConfig, "allegro_train/config/vae_schema.py")
    problems = Problems()
    problems.bounds(cfg, COMMON_BOUNDS)
    problems.bounds(cfg, _VAE_BOUNDS)
    check, vae, loss, data = problems.check, cfg.vae, cfg.loss, cfg.data

    check(vae.name in VAE_CONFIGS, "vae.name", vae.name, f"not a VAE size; known sizes: {sorted(VAE_CONFIGS)}")
    check(not (vae.pretrained and vae.image_vae), "vae.image_vae", vae.image_vae,
          "give vae.pretrained (a VideoVAE) or vae.image_vae (an image VAE to inflate), not both")
    for key, folder in (("vae.pretrained", vae.pretrained), ("vae.image_vae", vae.image_vae)):
        check(folder is None or Path(folder).is_dir(), key, folder, "no such folder")
    check(str(vae.trainable) == "all" or bool(vae.pretrained or vae.image_vae), "vae.trainable", vae.trainable,
          "freezes the 2D layers, which must then come from vae.pretrained or vae.image_vae "
          "(a fresh registry VAE needs vae.trainable=all)")

    if loss.lpips > 0:
        check(loss.lpips_path is not None, "loss.lpips_path", loss.lpips_path,
              f"loss.lpips={loss.lpips} needs local LPIPS weights (a .safetensors file, docs/vae.md), "
              "or set loss.lpips=0; nothing is downloaded")
        check(loss.lpips_path is None or Path(loss.lpips_path).is_file(), "loss.lpips_path", loss.lpips_path,
              "no such file (LPIPS weights: VGG16 features + linear heads in one .safetensors, docs/vae.md)")

    check(bool(data.shards), "data.shards", data.shards,
          "VAE training reads raw clips: data.shards=\"['/data/raw/{000000..000099}.tar']\"")
    check(not data.precomputed, "data.precomputed", data.precomputed,
          "VAE training reads pixels: shards of raw clips and images with data.precomputed=false")
    check_buckets(data, problems, max(data.vae_spatial_compression, 1), "the VAE's spatial compression")
    check_loop_and_parallel(cfg, problems)
    check(cfg.parallel.zero_stage <= 2, "parallel.zero_stage", cfg.parallel.zero_stage,
          "VAE training runs ZeRO 0-2 (the VAE fits every device; the discriminator's adaptive weight "
          "differentiates at an unpartitioned decoder weight)")
    check(cfg.optim.ema_decay is None, "optim.ema_decay", cfg.optim.ema_decay, "the VAE trainer keeps no EMA")
    check(cfg.parallel.sequence_parallel <= 1, "parallel.sequence_parallel", cfg.parallel.sequence_parallel,
          "sequence parallelism (Ulysses) splits the DiT's attention heads; the VAE trainer has none to split and "
          "runs data parallel only, so it must be 1")

    val = cfg.validation
    if val.every_steps is not None:
        check(bool(val.shards), "validation.shards", val.shards,
              "validation.every_steps needs held-out raw shards (validation.shards)")
    problems.raise_if_any()
