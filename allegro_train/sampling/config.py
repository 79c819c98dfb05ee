"""Typed configs of ``launch/sample.py`` and ``launch/export.py``, apart from training's.

``configs/sampling/sample.yaml`` and ``.../export.yaml`` only compose these schemas (registered in
Hydra's ConfigStore as ``sample_schema`` / ``export_schema``); an unknown or ill-typed key fails at
start-up, and ``validate_*`` names every value that type-checks but cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, cast

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from allegro_train.config.load import DEFAULT_CONFIG_DIR, compose_config
from allegro_train.config.schema import Precision
from allegro_train.sampling.distributed import launched_ranks
from allegro_train.sampling.schedulers import SCHEDULERS


# A folder of its own: in configs/ itself, `checkpoint=` would name the training's checkpoint/ group.
CONFIG_DIR = DEFAULT_CONFIG_DIR / "sampling"


class SampleConfigError(ValueError):
    """A sample / export config that cannot run; the message names each key and its value."""


@dataclass
class SampleConfig:
    checkpoint: str = MISSING  # a diffusers pipeline folder, or a run dir / run.dir/final / transformer folder
    prompt: Optional[str] = None  # exactly one of prompt and prompts_file
    prompts_file: Optional[str] = None  # one prompt a line; outputs get _000, _001, ... before the suffix
    negative_prompt: str = ""
    num_frames: int = 88  # the released defaults: 88 x 720 x 1280, 100 Euler-ancestral steps, CFG 7.5
    height: int = 720
    width: int = 1280
    steps: int = 100
    guidance: float = 7.5  # <= 1 turns classifier-free guidance off
    seed: int = 0  # every prompt starts from this seed, so a prompt's video does not depend on its line
    scheduler: Optional[str] = None  # a key of allegro_train.sampling.SCHEDULERS; null: the checkpoint's own
    # (its scheduler/ class), else euler_ancestral
    clean_caption: bool = True  # the released pipeline's default; false only lower-cases and strips
    max_length: int = 512  # T5 tokens
    out: str = "sample.mp4"  # .mp4 (15 fps H.264) or .npy (uint8 [T, H, W, 3])
    fps: int = 15
    vae: Optional[str] = None  # frozen components of a run checkpoint (default: the run's config.yaml)
    text_encoder: Optional[str] = None
    # Image-to-video (TI2V checkpoints, docs/ti2v.md): a first frame, optionally a last frame too, or
    # a clip to continue from its last context_frames frames. windows > 1 chains windows, each
    # continuing the previous one's last context_frames frames.
    image: Optional[str] = None
    last_image: Optional[str] = None
    video: Optional[str] = None
    context_frames: int = 8
    windows: int = 1
    device: str = "cuda"
    dtype: Precision = Precision.bf16  # DiT and T5; the VAE always decodes in fp32
    vae_tiling: bool = True  # the released pipeline always decodes in tiles
    offload: bool = False  # keep models on the CPU, each on the device only for its stage
    # Ulysses degree: under `torchrun --nproc_per_node=K`, each step's tokens split over the K ranks
    # (rank 0 decodes and writes); must divide the DiT's heads. Needs deepspeed.
    sequence_parallel: int = 1


@dataclass
class ExportConfig:
    checkpoint: str = MISSING
    out: str = MISSING  # the pipeline folder to write
    vae: Optional[str] = None
    text_encoder: Optional[str] = None
    scheduler: Optional[str] = None  # null: the checkpoint's own, else euler_ancestral
    overwrite: bool = False


ConfigStore.instance().store(name="sample_schema", node=SampleConfig)
ConfigStore.instance().store(name="export_schema", node=ExportConfig)


def _raise_missing(cfg: Any) -> None:
    if isinstance(cfg, DictConfig):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise SampleConfigError(f"config values required but not set (???): {', '.join(missing)}")


def validate_sample(cfg: SampleConfig) -> None:
    """Raise ``SampleConfigError`` listing every key that type-checks but cannot run."""
    _raise_missing(cfg)
    problems: list[str] = []

    def check(ok: bool, key: str, value: Any, why: str) -> None:
        if not ok:
            problems.append(f"{key}={value!r}: {why}")

    check((cfg.prompt is None) != (cfg.prompts_file is None), "prompt", cfg.prompt,
          f"give exactly one of prompt and prompts_file (prompts_file={cfg.prompts_file!r})")
    check(cfg.prompt is None or bool(cfg.prompt.strip()), "prompt", cfg.prompt, "is empty")
    check(cfg.steps >= 1, "steps", cfg.steps, "must be >= 1")
    check(cfg.fps >= 1, "fps", cfg.fps, "must be >= 1")
    check(cfg.scheduler is None or cfg.scheduler in SCHEDULERS, "scheduler", cfg.scheduler, f"choose one of {sorted(SCHEDULERS)}")
    check(Path(cfg.out).suffix in (".mp4", ".npy"), "out", cfg.out, "must end in .mp4 or .npy")
    check(cfg.dtype != Precision.fp16, "dtype", str(cfg.dtype), "fp16 overflows in the DiT; use bf16 or fp32")
    if cfg.device.startswith("cuda"):
        import torch

        check(torch.cuda.is_available(), "device", cfg.device, "CUDA is not available here; pass device=cpu")
    check(not (cfg.offload and cfg.device == "cpu"), "offload", cfg.offload, "needs an accelerator device")
    _check_condition(cfg, check)
    ranks = launched_ranks()
    check(cfg.sequence_parallel >= 1, "sequence_parallel", cfg.sequence_parallel, "must be >= 1")
    check(cfg.sequence_parallel == ranks, "sequence_parallel", cfg.sequence_parallel,
          f"this launch has {ranks} process(es) (WORLD_SIZE); launch exactly sequence_parallel ranks "
          f"(torchrun --nproc_per_node={cfg.sequence_parallel}), or set sequence_parallel={ranks}")
    if problems:
        raise SampleConfigError("invalid sample config:\n  " + "\n  ".join(problems))


def _check_condition(cfg: SampleConfig, check) -> None:
    check(cfg.image is None or cfg.video is None, "video", cfg.video, f"give image= or video=, not both (image={cfg.image!r})")
    check(cfg.last_image is None or cfg.image is not None, "last_image", cfg.last_image, "needs image= (the first frame)")
    for key in ("image", "last_image", "video"):
        path = getattr(cfg, key)
        check(path is None or Path(path).is_file(), key, path, "is not a file")
    check(cfg.windows >= 1, "windows", cfg.windows, "must be >= 1")
    check(cfg.windows == 1 or cfg.image is not None or cfg.video is not None, "windows", cfg.windows,
          "chaining windows needs a TI2V checkpoint and image= or video= for the first window")
    check(1 <= cfg.context_frames < cfg.num_frames or (cfg.video is None and cfg.windows == 1), "context_frames",
          cfg.context_frames, f"must be in [1, num_frames={cfg.num_frames}): the frames given to a continued window")


def validate_export(cfg: ExportConfig) -> None:
    _raise_missing(cfg)
    if cfg.scheduler is not None and cfg.scheduler not in SCHEDULERS:
        raise SampleConfigError(f"scheduler={cfg.scheduler!r}: choose one of {sorted(SCHEDULERS)}")


def load_sample_config(overrides: Sequence[str] = ()) -> SampleConfig:
    """Compose ``configs/sampling/sample.yaml`` with Hydra-syntax ``overrides`` and validate it."""
    cfg = cast(SampleConfig, compose_config(CONFIG_DIR, "sample", overrides, SampleConfigError))
    validate_sample(cfg)
    return cfg


def load_export_config(overrides: Sequence[str] = ()) -> ExportConfig:
    cfg = cast(ExportConfig, compose_config(CONFIG_DIR, "export", overrides, SampleConfigError))
    validate_export(cfg)
    return cfg
