"""The typed config of a curation run, separate from the training config.

One dataclass per section holds every default; ``data_recipes/configs/curate.yaml`` only composes
the selection preset (group ``select``, one file per training stage) and overrides. OmegaConf
checks keys and types as overrides merge; ``validate`` adds bounds, stage order and the paths the
model-based scorers need, so a bad run fails before any video is read, naming the key.
Importing this module registers the schema in Hydra's ConfigStore as ``curate_schema``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, cast

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIG_NAME = "curate"


class CurateConfigError(ValueError):
    """A curation config that cannot run; the message names each full key and its value."""


class Stage(str, Enum):
    """Pipeline stages in run order. probe..caption run per source video; select and shard per catalog."""

    probe = "probe"
    split = "split"
    score = "score"
    caption = "caption"
    select = "select"
    shard = "shard"


STAGE_ORDER = list(Stage)
VIDEO_STAGES = (Stage.probe, Stage.split, Stage.score, Stage.caption)


class Backend(str, Enum):
    local = "local"  # a process pool on this machine
    ray = "ray"  # planned (issue 5): refused by validate until it is built


@dataclass
class ProbeConfig:
    """Raw-video limits of the report's first funnel step (under 2 s, under 23 fps, under 360p)."""

    min_duration: float = 2.0  # seconds
    min_fps: float = 23.0
    min_short_side: int = 360  # pixels: min(height, width)
    extensions: list[str] = field(default_factory=lambda: [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"])


@dataclass
class SplitConfig:
    """PySceneDetect ContentDetector settings and the clip window rules (2-16 s, trim 10 frames)."""

    threshold: float = 27.0  # ContentDetector's default: HSV-change score that starts a new scene
    min_scene_frames: int = 15  # scenes shorter than this merge into their neighbour
    trim_frames: int = 10  # dropped at each end of a scene (transitions, fades)
    min_seconds: float = 2.0
    max_seconds: float = 16.0  # longer scenes are cut into equal pieces no longer than this
    stream_copy: bool = True  # copy packets when a clip starts on a keyframe, else re-encode
    crf: int = 18  # libx264 quality of re-encoded clips
    encode_preset: str = "veryfast"


@dataclass
class AestheticConfig:
    """LAION-style predictor: a CLIP image embedding fed to a small MLP head."""

    embedder_path: Optional[str] = None  # a transformers CLIP folder (config, safetensors, preprocessor_config.json)
    head_path: Optional[str] = None  # a .safetensors file with layers.{i}.weight / .bias of the MLP head
    activation: str = "none"  # between head layers: "none" (LAION's predictor), "relu" or "gelu"


@dataclass
class ScoreConfig:
    scorers: list[str] = field(
        default_factory=lambda: ["brightness", "black_border", "clarity", "motion", "frame_diff"]
    )
    num_frames: int = 8  # frames sampled evenly over a clip (each with its next frame, for motion)
    short_side: int = 256  # frames are scaled to this short side before scoring (never up)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)


@dataclass
class CaptionConfig:
    sidecar: bool = True  # use <video>.json {"caption": ...} or <video>.txt beside a source video
    vlm_path: Optional[str] = None  # a transformers vision-language model folder: planned, refused for now


@dataclass
class SelectConfig:
    """Which catalog rows become shards. A preset (group ``select``) fills ``name`` and ``conditions``.

    ``conditions`` maps a catalog column to a DuckDB SQL condition on it; a condition whose column
    the catalog lacks (that scorer did not run) is skipped and reported. ``where`` replaces the
    conditions with one SQL filter over any columns.
    """

    name: str = "all"  # the shard folder: OUT/shards/<name>/
    conditions: dict[str, str] = field(default_factory=dict)
    where: Optional[str] = None


@dataclass
class ShardConfig:
    max_count: int = 1000  # samples a shard
    max_size_mb: float = 1024.0  # a new shard starts before this size is passed


@dataclass
class CurateConfig:
    input_dir: Optional[str] = None  # raw videos, searched recursively; needed by the per-video stages
    output_dir: str = MISSING  # clips/, work/, catalog/, shards/ and report.json go here
    workers: int = 1  # 1 runs in this process; more starts a process pool
    backend: Backend = Backend.local
    stages: list[Stage] = field(default_factory=lambda: list(Stage))
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)


ConfigStore.instance().store(name="curate_schema", node=CurateConfig)

# Model scorers the reference funnel names that are planned; the built ones are scorers.FACTORIES.
PLANNED_SCORERS = ("clip_similarity", "text_area")

_BOUNDS: list[tuple[tuple[str, ...], Callable[[Any], bool], str]] = [
    (("workers", "split.min_scene_frames", "score.num_frames", "score.short_side", "shard.max_count"),
     lambda v: v >= 1, "must be >= 1"),
    (("probe.min_duration", "probe.min_fps", "probe.min_short_side", "split.trim_frames", "split.min_seconds"),
     lambda v: v >= 0, "must be >= 0"),
    (("split.threshold", "split.max_seconds", "shard.max_size_mb"), lambda v: v > 0, "must be > 0"),
    (("split.crf",), lambda v: 0 <= v <= 51, "is a libx264 CRF, must be in [0, 51]"),
    (("score.aesthetic.activation",), lambda v: v in ("none", "relu", "gelu"), "must be 'none', 'relu' or 'gelu'"),
]


def validate(cfg: CurateConfig) -> None:
    """Raise ``CurateConfigError`` listing every key that type-checks but cannot run."""
    if isinstance(cfg, DictConfig):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise CurateConfigError(f"config values required but not set (???): {', '.join(missing)}")
    problems: list[str] = []

    def check(ok: bool, key: str, value: Any, why: str) -> None:
        if not ok:
            problems.append(f"{key}={value!r}: {why}")

    for keys, test, why in _BOUNDS:
        for key in keys:
            value = functools.reduce(getattr, key.split("."), cfg)
            check(test(value), key, value, why)
    check(cfg.split.max_seconds >= cfg.split.min_seconds, "split.max_seconds", cfg.split.max_seconds,
          f"must be >= split.min_seconds ({cfg.split.min_seconds})")

    stages = [Stage(s) for s in cfg.stages]
    indices = [STAGE_ORDER.index(s) for s in stages]
    contiguous = bool(indices) and indices == list(range(indices[0], indices[0] + len(indices)))
    check(contiguous and stages[0] in (Stage.probe, Stage.select), "stages", [s.value for s in stages],
          "must be consecutive stages in the order probe, split, score, caption, select, shard, starting "
          "at probe (a full or catalog-building run) or at select (re-select from the catalog)")
    if any(s in VIDEO_STAGES for s in stages):
        check(cfg.input_dir is not None and Path(cfg.input_dir).is_dir(), "input_dir", cfg.input_dir,
              "the per-video stages need an existing folder of raw videos")

    check(Backend(cfg.backend) is Backend.local, "backend", str(Backend(cfg.backend).value),
          "the Ray backend is not built yet (issue 5); use backend=local with workers=N")
    check(cfg.caption.vlm_path is None, "caption.vlm_path", cfg.caption.vlm_path,
          "VLM captioning is not built yet (issue 5); use sidecar captions, or leave clips uncaptioned "
          "and caption them later over the catalog")

    from data_recipes.scorers import FACTORIES  # imported here: the scorers import this module

    for i, name in enumerate(cfg.score.scorers):
        key = f"score.scorers[{i}]"
        if name in PLANNED_SCORERS:
            check(False, key, name, "this model-based scorer is planned (issue 5) but not built yet")
        else:
            check(name in FACTORIES, key, name, f"unknown scorer; known: {sorted(FACTORIES)}")
    if "aesthetic" in cfg.score.scorers:
        for key in ("embedder_path", "head_path"):
            value = getattr(cfg.score.aesthetic, key)
            check(value is not None and Path(value).exists(), f"score.aesthetic.{key}", value,
                  "the aesthetic scorer needs this local path, and it does not exist")
    for column, condition in cfg.select.conditions.items():
        check(bool(condition and condition.strip()), f"select.conditions.{column}", condition,
              "an empty condition; remove the key with ~select.conditions.<column> instead")
    if problems:
        raise CurateConfigError("invalid curation config:\n  " + "\n  ".join(problems))


def load_config(overrides: Sequence[str] = ()) -> CurateConfig:
    """Compose ``configs/curate.yaml`` with Hydra-syntax ``overrides`` and validate it."""
    # Imported here because allegro_train.config imports torch, which worker processes that only
    # import this module should not pay for.
    from allegro_train.config.load import compose_config

    cfg = compose_config(CONFIG_DIR, CONFIG_NAME, overrides, CurateConfigError)
    validate(cast(CurateConfig, cfg))
    return cast(CurateConfig, cfg)

