"""The typed config of a curation run, separate from the training config.

One dataclass per section holds every default; ``data_recipes/configs/curate.yaml`` only composes
the selection preset (group ``select``, one file per training stage) and overrides. OmegaConf
checks keys and types as overrides merge; ``validate`` adds bounds, stage order and the paths the
model-based scorers and the VLM captioner need, so a bad run fails before any video is read,
naming the key.
Importing this module registers the schema in Hydra's ConfigStore as ``curate_schema``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, cast

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

if TYPE_CHECKING:
    from allegro_train.config.bounds import Bounds

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
    local = "local"  # this process, or a process pool on this machine (``workers``)
    ray = "ray"  # Ray Data over a Ray cluster or a local Ray instance (``ray.*``)


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


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
class ClipSimilarityConfig:
    """CLIP text-video similarity: cosine of the caption's text embedding and the mean image embedding."""

    model_path: Optional[str] = None  # a transformers CLIPModel folder with its tokenizer and preprocessor_config.json
    num_frames: int = 4  # of the clip's scoring samples, this many (evenly spread) are embedded


@dataclass
class TextAreaConfig:
    """Text area from a DB text detector (ONNX) run by OpenCV's ``cv2.dnn.TextDetectionModel_DB``.

    The post-processing settings and the input mean are those of OpenCV's text-detection sample
    for its DB models (BGR mean, pixels scaled by 1/255).
    """

    model_path: Optional[str] = None  # .onnx: [1, 3, H, W] image in, [H, W] text probability map out
    binary_threshold: float = 0.3  # probability above which a pixel is text
    polygon_threshold: float = 0.5  # mean probability a detected region needs to count
    unclip_ratio: float = 2.0  # DB predicts shrunk text kernels; regions are grown back by this ratio
    max_candidates: int = 200  # text regions considered a frame
    mean: list[float] = field(default_factory=lambda: [122.67891434, 116.66876762, 104.00698793])


@dataclass
class ScoreConfig:
    scorers: list[str] = field(
        default_factory=lambda: ["brightness", "black_border", "clarity", "motion", "frame_diff"]
    )
    num_frames: int = 8  # frames sampled evenly over a clip (each with its next frame, for motion)
    short_side: int = 256  # frames are scaled to this short side before scoring (never up)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    clip_similarity: ClipSimilarityConfig = field(default_factory=ClipSimilarityConfig)
    text_area: TextAreaConfig = field(default_factory=TextAreaConfig)


@dataclass
class VLMConfig:
    """A transformers image-text-to-text model (LLaVA, Qwen2-VL, ...) captioning clips from sampled frames."""

    path: Optional[str] = None  # the model folder (weights, config, processor); None: no VLM captions
    prompt: str = ("Describe this video in detail: the main subjects, what they do, the setting, "
                   "and how the camera moves.")  # the report's captions carry camera-motion phrases
    num_frames: int = 4  # frames sampled evenly over a clip, passed as that many images
    short_side: int = 448  # frames are scaled to this short side (never up) before the processor
    batch_size: int = 8  # clips a generate call (within one raw video's clips)
    max_new_tokens: int = 128
    device: str = "cpu"  # e.g. "cuda" (with backend=ray, reserve GPUs with ray.num_gpus_per_video)
    dtype: Dtype = Dtype.float32


@dataclass
class CaptionConfig:
    sidecar: bool = True  # use <video>.json {"caption": ...} or <video>.txt beside a source video
    vlm: VLMConfig = field(default_factory=VLMConfig)  # runs after the sidecar, on clips still uncaptioned


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
class RayConfig:
    """backend=ray: one Ray task a raw video, mapped with Ray Data. Every node must see input_dir and
    output_dir at the same paths (a shared filesystem) and have this package installed."""

    address: Optional[str] = None  # None: Ray's default (RAY_ADDRESS, a cluster on this node, else a new local
    # instance; an instance this process already joined is used as it is); "auto"; "ray://head:10001"
    num_cpus_per_video: float = 1.0  # CPUs Ray reserves for a task (ffmpeg and OpenCV may use more)
    num_gpus_per_video: float = 0.0  # GPUs Ray reserves for a task (a VLM or model scorers on "cuda")
    concurrency: Optional[int] = None  # at most this many videos at once; None: as many as resources allow


@dataclass
class CurateConfig:
    input_dir: Optional[str] = None  # raw videos, searched recursively; needed by the per-video stages
    output_dir: str = MISSING  # clips/, work/, catalog/, shards/ and report.json go here
    workers: int = 1  # backend=local: 1 runs in this process; more starts a process pool
    backend: Backend = Backend.local
    ray: RayConfig = field(default_factory=RayConfig)
    stages: list[Stage] = field(default_factory=lambda: list(Stage))
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)


ConfigStore.instance().store(name="curate_schema", node=CurateConfig)

# The local weight paths each model scorer needs (checked before any video is read).
MODEL_PATHS = {
    "aesthetic": ("score.aesthetic.embedder_path", "score.aesthetic.head_path"),
    "clip_similarity": ("score.clip_similarity.model_path",),
    "text_area": ("score.text_area.model_path",),
}

_BOUNDS: Bounds = [
    (("workers", "split.min_scene_frames", "score.num_frames", "score.short_side", "shard.max_count",
      "score.clip_similarity.num_frames", "score.text_area.max_candidates", "caption.vlm.num_frames",
      "caption.vlm.short_side", "caption.vlm.batch_size", "caption.vlm.max_new_tokens"),
     lambda v: v >= 1, "must be >= 1"),
    (("probe.min_duration", "probe.min_fps", "probe.min_short_side", "split.trim_frames", "split.min_seconds",
      "ray.num_gpus_per_video"), lambda v: v >= 0, "must be >= 0"),
    (("split.threshold", "split.max_seconds", "shard.max_size_mb", "score.text_area.unclip_ratio",
      "ray.num_cpus_per_video"), lambda v: v > 0, "must be > 0"),
    (("ray.concurrency",), lambda v: v is None or v >= 1, "must be >= 1, or null for as many as resources allow"),
    (("score.text_area.binary_threshold", "score.text_area.polygon_threshold"), lambda v: 0 <= v <= 1,
     "is a probability, must be in [0, 1]"),
    (("score.text_area.mean",), lambda v: len(v) == 3, "must be 3 numbers (B, G, R)"),
    (("split.crf",), lambda v: 0 <= v <= 51, "is a libx264 CRF, must be in [0, 51]"),
    (("score.aesthetic.activation",), lambda v: v in ("none", "relu", "gelu"), "must be 'none', 'relu' or 'gelu'"),
]


def local_path(key: str, value: Optional[str]) -> Path:
    """``value`` as a Path if it exists; else ``FileNotFoundError`` naming the config key."""
    if value is None or not Path(value).exists():
        raise FileNotFoundError(f"{key}={value!r}: needs an existing local path (models load from local files only)")
    return Path(value)


def _cuda_available() -> bool:
    import torch  # only for a config that asks for CUDA

    return torch.cuda.is_available()


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

    from allegro_train.config.bounds import bound_failures, config_value  # here: that package imports torch (see load_config)

    for key, value, why in bound_failures(cfg, _BOUNDS):
        check(False, key, value, why)
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

    if Backend(cfg.backend) is Backend.ray:
        check(importlib.util.find_spec("ray") is not None, "backend", "ray",
              "needs Ray Data: pip install 'ray[data]' (or the data extra of this package)")
        check(cfg.workers == 1, "workers", cfg.workers,
              "is the local backend's process count; with backend=ray set ray.concurrency instead")

    from data_recipes.scorers import FACTORIES  # imported here: the scorers import this module

    for i, name in enumerate(cfg.score.scorers):
        check(name in FACTORIES, f"score.scorers[{i}]", name, f"unknown scorer; known: {sorted(FACTORIES)}")
    model_paths = [key for name in cfg.score.scorers for key in MODEL_PATHS.get(name, ())] if Stage.score in stages else []
    vlm = cfg.caption.vlm
    if Stage.caption in stages and vlm.path is not None:
        model_paths.append("caption.vlm.path")
        # With Ray the GPUs may be on other nodes than this driver: Ray places the tasks.
        check(not vlm.device.startswith("cuda") or Backend(cfg.backend) is Backend.ray or _cuda_available(),
              "caption.vlm.device", vlm.device, "CUDA is not available here")
    for key in model_paths:
        try:
            local_path(key, config_value(cfg, key))
        except FileNotFoundError as err:
            problems.append(str(err))
    if Stage.score in stages and "clip_similarity" in cfg.score.scorers:
        check(Stage.caption in stages, "score.scorers", list(cfg.score.scorers),
              "clip_similarity compares each clip with its caption: add caption to stages")
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

