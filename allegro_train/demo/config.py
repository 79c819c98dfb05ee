"""The typed config of ``launch/demo.py``: sizes of each step of the end-to-end demo, and nothing else.

Each step runs through the entry points users run at scale, so their own configs (curation,
``+stage=vae_pretrain``, precompute, ``+stage=demo``) hold everything else; this schema holds what
the demo chooses for them (how many videos, steps, which sizes). ``configs/demo/demo.yaml`` only
composes it; ``quick=true`` is the shortened run the tests make (it proves the plumbing, not the
prompt-following score).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, cast

from hydra.core.config_store import ConfigStore

from allegro_train.config.load import DEFAULT_CONFIG_DIR, compose_config
from allegro_train.config.bounds import Bounds
from allegro_train.config.schema import ConfigError, Problems, WandbMode, check_structure

CONFIG_DIR = DEFAULT_CONFIG_DIR / "demo"


# The training configs' error type: a bad demo key reads like a bad training key.
DemoConfigError = ConfigError


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


_BOUNDS: Bounds = [
    (("videos.count", "videos.fps", "videos.scene_frames", "clip.frames", "clip.frame_stride", "steps.vae",
      "steps.dit", "steps.sample", "sample.seeds", "workers"), lambda v: v >= 1, "must be >= 1"),
    (("videos.size",), lambda v: v >= 32 and v % 16 == 0, "must be a multiple of 16 and >= 32 (VAE 8x8 x DiT patch 2)"),
    (("videos.cut_fraction",), lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    (("clip.frames",), lambda v: v % 4 == 0, "must be a multiple of 4 (the VAE's time compression)"),
    (("sample.guidance",), lambda v: v >= 1, "must be >= 1 (1: no guidance)"),
]


def validate(cfg: DemoConfig) -> None:
    """Raise ``DemoConfigError`` naming every key that type-checks but cannot run."""
    check_structure(cfg, DemoConfig, "allegro_train/demo/config.py")
    problems = Problems()
    problems.bounds(cfg, _BOUNDS)
    # the clip must fit in a scene after the split trims 10 frames at each end
    span = (cfg.clip.frames - 1) * cfg.clip.frame_stride + 1
    kept = cfg.videos.scene_frames - 20
    problems.check(span <= kept, "clip.frame_stride", cfg.clip.frame_stride,
                   f"clip.frames={cfg.clip.frames} every {cfg.clip.frame_stride} frames spans {span} frames, more "
                   f"than a scene of videos.scene_frames={cfg.videos.scene_frames} keeps after the split's trims ({kept})")
    unknown = sorted(set(cfg.overrides) - set(STEP_KEYS))
    problems.check(not unknown, "overrides", unknown, f"keys must be among {list(STEP_KEYS)}")
    problems.raise_if_any()


def load_demo_config(overrides: Sequence[str] = ()) -> DemoConfig:
    """Compose ``configs/demo/demo.yaml`` with Hydra-syntax ``overrides`` and validate it."""
    cfg = cast(DemoConfig, compose_config(CONFIG_DIR, "demo", overrides, DemoConfigError))
    validate(cfg)
    return cfg

