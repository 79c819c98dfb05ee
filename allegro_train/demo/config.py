"""The typed config of ``launch/demo.py``: sizes of each step of the end-to-end demo, and nothing else.

Each step runs through the entry points users run at scale, so their own configs (curation,
``+stage=vae_pretrain``, precompute, ``+stage=demo``) hold everything else; this schema holds what
the demo chooses for them (how many videos, steps, which sizes). ``configs/demo/demo.yaml`` only
composes it; ``quick=true`` is the shortened run the tests make (it proves the plumbing, not the
prompt-following score).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import functools
from typing import Any, Sequence, cast

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from allegro_train.config.load import DEFAULT_CONFIG_DIR, compose_config
from allegro_train.config.schema import WandbMode

CONFIG_DIR = DEFAULT_CONFIG_DIR / "demo"


class DemoConfigError(ValueError):
    """A demo config that cannot run; the message names each key and its value."""


@dataclass
class DemoRunConfig:
    dir: str = "runs/demo_e2e"  # everything the demo makes goes under this folder
    seed: int = 0


@dataclass
class DemoVideosConfig:
    count: int = 200  # raw videos
    size: int = 64  # pixels, square
    fps: int = 24  # >= curation's 23 fps floor
    scene_frames: int = 77  # 3.2 s: after the scene split's 10-frame trims, 2.4 s (>= its 2 s floor)
    cut_fraction: float = 0.25  # videos made of two scenes (a hard cut)


@dataclass
class DemoClipConfig:
    """The training clip: frames taken every ``frame_stride`` source frames, then encoded 4x / 8x8."""

    frames: int = 16
    frame_stride: int = 3


@dataclass
class DemoStepsConfig:
    vae: int = 40  # optimizer steps of +stage=vae_pretrain (its 64 x 64 convolutions dominate a CPU run)
    dit: int = 1500  # optimizer steps of +stage=demo
    sample: int = 30  # denoising steps a sample


@dataclass
class DemoSampleConfig:
    seeds: int = 2  # samples per held-out prompt
    guidance: float = 7.5
    scheduler: str = "euler_ancestral"


@dataclass
class DemoConfig:
    run: DemoRunConfig = field(default_factory=DemoRunConfig)
    videos: DemoVideosConfig = field(default_factory=DemoVideosConfig)
    clip: DemoClipConfig = field(default_factory=DemoClipConfig)
    steps: DemoStepsConfig = field(default_factory=DemoStepsConfig)
    sample: DemoSampleConfig = field(default_factory=DemoSampleConfig)
    workers: int = 2  # curation processes
    wandb_mode: WandbMode = WandbMode.offline
    # Extra Hydra overrides handed to each step's own config, e.g. dit=[optim.lr=5e-4].
    overrides: dict[str, list[str]] = field(default_factory=lambda: {"curate": [], "vae": [], "precompute": [],
                                                                     "dit": []})


ConfigStore.instance().store(name="demo_schema", node=DemoConfig)

STEP_KEYS = ("curate", "vae", "precompute", "dit")


def validate(cfg: DemoConfig) -> None:
    if isinstance(cfg, DictConfig):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise DemoConfigError(f"config values required but not set (???): {', '.join(missing)}")
    problems: list[str] = []

    def check(ok: bool, key: str, value: Any, why: str) -> None:
        if not ok:
            problems.append(f"{key}={value!r}: {why}")

    for key in ("videos.count", "videos.fps", "videos.scene_frames", "clip.frames", "clip.frame_stride",
                "steps.vae", "steps.dit", "steps.sample", "sample.seeds", "workers"):
        value = functools.reduce(getattr, key.split("."), cfg)
        check(value >= 1, key, value, "must be >= 1")
    check(cfg.videos.size >= 32 and cfg.videos.size % 16 == 0, "videos.size", cfg.videos.size,
          "must be a multiple of 16 and >= 32 (VAE 8x8 x DiT patch 2)")
    check(0 <= cfg.videos.cut_fraction <= 1, "videos.cut_fraction", cfg.videos.cut_fraction, "must be in [0, 1]")
    check(cfg.clip.frames % 4 == 0, "clip.frames", cfg.clip.frames, "must be a multiple of 4 (the VAE's time compression)")
    # the clip must fit in a scene after the split trims 10 frames at each end
    span = (cfg.clip.frames - 1) * cfg.clip.frame_stride + 1
    check(span <= cfg.videos.scene_frames - 20, "clip.frame_stride", cfg.clip.frame_stride,
          f"clip.frames={cfg.clip.frames} every {cfg.clip.frame_stride} frames spans {span} frames, more than a "
          f"scene of videos.scene_frames={cfg.videos.scene_frames} keeps after the split's trims ({cfg.videos.scene_frames - 20})")
    check(cfg.sample.guidance >= 1, "sample.guidance", cfg.sample.guidance, "must be >= 1 (1: no guidance)")
    unknown = sorted(set(cfg.overrides) - set(STEP_KEYS))
    check(not unknown, "overrides", unknown, f"keys must be among {list(STEP_KEYS)}")
    if problems:
        raise DemoConfigError("invalid demo config:\n  " + "\n  ".join(problems))


def load_demo_config(overrides: Sequence[str] = ()) -> DemoConfig:
    """Compose ``configs/demo/demo.yaml`` with Hydra-syntax ``overrides`` and validate it."""
    cfg = cast(DemoConfig, compose_config(CONFIG_DIR, "demo", overrides, DemoConfigError))
    validate(cfg)
    return cfg


def run_dir(cfg: DemoConfig) -> Path:
    return Path(cfg.run.dir)

