"""The typed config of a training run: one dataclass per Hydra group and the only home of defaults.

Defaults are the released Allegro training recipe (AdamW 1e-4, ZeRO-2, bf16, DDPM epsilon with
min-SNR 5 and offset noise 0.02, caption dropout 0.1) applied to debug sizes (the ``allegro-debug``
DiT on small synthetic clips). The YAML under ``configs/`` only picks group options and per-stage
numbers.

OmegaConf checks keys, types and enum values when YAML or command-line overrides merge into these
dataclasses; ``validate`` adds what it cannot: bounds, rules across fields, the DiT registry, and
keys added with Hydra's ``+key=value`` (which bypasses the struct check).
Importing this module registers the schema in Hydra's ConfigStore as ``train_schema``, the first
entry of ``configs/config.yaml``'s defaults list.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from enum import Enum
from typing import Any, Callable, Optional, get_args, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from allegro_train.config.bounds import Bounds, bound_failures
from allegro_train.data.buckets import latent_shape
from allegro_train.models.dit import DIT_CONFIGS, DiTConfig, dit_config, parse_checkpointing


class ConfigError(ValueError):
    """A config that cannot train; the message names each full key (``model.name``) and its value."""


class _StrEnum(str, Enum):
    """Members equal and print as their value, so ``f"{Precision.bf16}" == "bf16"`` for downstream code."""

    def __str__(self) -> str:
        return str(self.value)


class AttentionBackend(_StrEnum):
    sdpa = "sdpa"
    flash = "flash"
    auto = "auto"


class Objective(_StrEnum):
    epsilon = "epsilon"  # the released objective
    v = "v"
    flow = "flow"  # rectified flow: x_t = (1 - t) x_0 + t noise, predict noise - x_0


class BetaSchedule(_StrEnum):
    linear = "linear"  # the released DDPM schedule; add members as diffusion/schedules.py grows


class LRSchedule(_StrEnum):
    constant = "constant"
    cosine = "cosine"


class Precision(_StrEnum):
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class DecodeBackend(_StrEnum):
    decord = "decord"  # the default: fastest seek-to-frame on H.264 clips
    pyav = "pyav"
    torchcodec = "torchcodec"  # an optional install (pip install torchcodec; needs ffmpeg's shared libraries)


class WandbMode(_StrEnum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class RunConfig:
    dir: str = "runs/${stage.name}"  # checkpoints, metrics and the resolved config go here
    name: str = "${stage.name}"  # the W&B run name
    seed: int = 0


@dataclass
class LoopConfig:
    """The training loop's length; ``train.max_steps`` is a key other tools rely on."""

    max_steps: int = 100  # optimizer steps; raise it and relaunch to continue a finished run
    # Dense bf16 peak of one device, TFLOP/s, the denominator of the logged MFU (H100/H200 SXM: 989).
    device_peak_tflops: float = 989.0
    # Fault handling (allegro_train/training/faults.py, docs/troubleshooting.md). Watchdog: with no
    # step completed in this many seconds every rank dumps its stacks and exits non-zero (None: off).
    watchdog_seconds: Optional[float] = None
    watchdog_first_grace: float = 600.0  # added to the first step's deadline (kernel builds, loader warm-up)
    max_nonfinite_in_row: int = 20  # NaN/inf-loss steps are skipped; this many in a row stop the run


@dataclass
class ModelConfig:
    name: str = "allegro-debug"  # a key of allegro_train.models.dit.DIT_CONFIGS
    pretrained: Optional[str] = None  # a diffusers ``transformer/`` folder to start from
    attention_backend: AttentionBackend = AttentionBackend.sdpa
    # "none" | "all" | "every_<k>" | "selective" (every block, keeping its attention outputs)
    activation_checkpointing: str = "none"
    compile: bool = False  # torch.compile each block (whole-graph; worth it on GPUs)
    # One q/k/v Linear per self-attention (checkpoints and exports keep diffusers' to_q/to_k/to_v keys).
    # Off until a GPU measurement shows it faster (docs/benchmarks.md); not with LoRA.
    fused_qkv: bool = False
    # RoPE positions are divided by these; None keeps the registry's value. Each stage sets its own
    # (2.2/2.0/2.0 for 88x720p, 1.0/2.0/2.0 for 40x720p, 1.0/1.0/1.0 at 368p).
    interpolation_scale_t: Optional[float] = None
    interpolation_scale_h: Optional[float] = None
    interpolation_scale_w: Optional[float] = None
    # Frozen encoders for data.precomputed=false (raw clips encoded on the trainer's device):
    # a diffusers vae/ folder and a folder with text_encoder/ + tokenizer/ (or the pipeline root).
    vae_pretrained: Optional[str] = None
    text_encoder_pretrained: Optional[str] = None
    vae_tiling: bool = False  # tile the VAE's encode (memory bounded by the tile)
    # LoRA fine-tuning (peft): rank 0 trains every weight; > 0 freezes the DiT and trains adapters
    # on these Linears. Exported merged into final/transformer and as adapters in final/lora.
    lora_rank: int = 0
    lora_alpha: Optional[float] = None  # None: the rank (scale 1)
    lora_targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class BucketConfig:
    """One clip shape in pixels; a batch holds clips of a single bucket (no padding inside a batch)."""

    frames: int = MISSING
    height: int = MISSING
    width: int = MISSING


@dataclass
class DataConfig:
    # Webdataset shard paths or brace patterns; [] -> synthetic batches (debug runs). data=shards
    # sets None, which validate rejects, so a real stage never trains on noise by omission.
    shards: Optional[list[str]] = field(default_factory=list)
    buckets: list[BucketConfig] = field(default_factory=lambda: [BucketConfig(frames=8, height=64, width=64)])
    batch_size: int = 1  # per process; the released recipe trains with 1 clip a GPU
    num_workers: int = 4
    text_len: int = 512  # max T5 tokens
    precomputed: bool = True  # shards hold VAE latents and T5 states rather than pixels and captions
    vae_temporal_compression: int = 4  # 88 frames -> 22 latents
    vae_spatial_compression: int = 8
    latent_scaling_factor: float = 0.13  # the released VAE's; precomputed latents are stored unscaled
    # T5 states of the empty caption (.npy [L, D]), trained on with p = diffusion.caption_dropout;
    # written by the precompute step. Synthetic debug data brings its own.
    null_caption: Optional[str] = None
    # Streaming (allegro_train/data, docs/data.md). The loader is endless unless epochs is set.
    epochs: Optional[int] = None  # None: loop over the shards forever; N: stop after N passes
    shuffle_buffer: int = 64  # raw samples held per worker (memory: ~64 x 10 MB at 88x720p)
    shard_retries: int = 2  # reopen a failing shard this often (resuming where it broke), then skip it
    # Online path (precomputed=false): how raw clips become bucket-sized pixels.
    decode_backend: DecodeBackend = DecodeBackend.decord
    frame_stride: int = 1  # take every k-th frame of the source
    target_fps: Optional[float] = None  # resample to this rate instead (stride = clip fps / target_fps)
    max_upscale: float = 1.0  # a sample goes to no bucket it would have to be enlarged more than this for
    # Batch size per bucket from a budget of latent positions (T' x H' x W'; DiT tokens are these over
    # patch^2): batch = token_budget // positions. None: data.batch_size for every bucket.
    token_budget: Optional[int] = None
    # Share of batches drawn from image buckets (frames 1) when the table has both kinds; None: batches
    # leave in the order their buckets fill, which follows the data's own mix.
    image_fraction: Optional[float] = None


@dataclass
class DiffusionConfig:
    objective: Objective = Objective.epsilon
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: BetaSchedule = BetaSchedule.linear
    min_snr_gamma: Optional[float] = 5.0  # None turns min-SNR loss weighting off
    offset_noise: float = 0.02  # noise += offset_noise * randn(B, C, 1, 1, 1)
    caption_dropout: float = 0.1  # p of training on the empty caption, for classifier-free guidance
    # Rectified flow only: t = sigmoid(N(mean, std)), then shifted by flow_shift.
    flow_logit_mean: float = 0.0
    flow_logit_std: float = 1.0
    flow_shift: Optional[float] = None  # None: chosen from the token count (resolution dependent)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-2
    eps: float = 1e-8
    grad_clip: Optional[float] = 1.0  # max global grad norm; None disables clipping
    warmup_steps: int = 0
    lr_schedule: LRSchedule = LRSchedule.constant
    grad_accum_steps: int = 1
    ema_decay: Optional[float] = None  # e.g. 0.999; None keeps no EMA copy


@dataclass
class ParallelConfig:
    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False  # ZeRO-3 only
    sequence_parallel: int = 1  # Ulysses group size; splits attention heads, so it must divide them
    precision: Precision = Precision.bf16


@dataclass
class CheckpointConfig:
    every_steps: int = 1000
    keep_last: int = 3
    resume: bool = True  # continue from the newest checkpoint in run.dir if there is one


@dataclass
class LoggingConfig:
    every_steps: int = 10
    wandb_mode: WandbMode = WandbMode.offline
    wandb_project: str = "allegro_train"
    wandb_entity: Optional[str] = None


@dataclass
class ValidationConfig:
    """Samples from fixed prompts and seeds during training (needs the frozen VAE and T5 paths)."""

    every_steps: Optional[int] = None  # None: no validation sampling
    prompts: list[str] = field(default_factory=lambda: ["a red square moves right", "a blue circle moves up"])
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 50
    guidance: float = 7.5
    scheduler: str = "euler_ancestral"
    num_frames: Optional[int] = None  # None: the first bucket's size
    height: Optional[int] = None
    width: Optional[int] = None
    fps: int = 15


@dataclass
class TI2VConfig:
    """Image-to-video training (docs/ti2v.md): the TI2V DiT, and per sample one conditioning task drawn
    with probability proportional to its weight. Defaults: the released mix."""

    enabled: bool = False  # train AllegroTI2VDiT; a T2V model.pretrained is converted on load
    i2v: float = 0.5  # the first frame given
    interpolation: float = 0.4  # the first and the last frame given
    v2v: float = 0.1  # the first k frames given (continuation)
    v2v_frames: Optional[int] = None  # k, in pixel frames; None: uniform in [1, T] per sample, as released


@dataclass
class StageConfig:
    name: str = "debug"
    description: str = ""


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    ti2v: TI2VConfig = field(default_factory=TI2VConfig)
    stage: StageConfig = field(default_factory=StageConfig)


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def dit_config_for(model: ModelConfig) -> DiTConfig:
    """The registry's DiT architecture with this run's RoPE interpolation overrides applied."""
    overrides = {
        f"interpolation_scale_{axis}": getattr(model, f"interpolation_scale_{axis}")
        for axis in "thw"
        if getattr(model, f"interpolation_scale_{axis}") is not None
    }
    return dit_config(model.name, **overrides)


# ------------------------------------------------------------------------------------ validate


def _show(value: Any) -> str:
    if isinstance(value, Enum):
        return repr(value.value)
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return str(OmegaConf.to_container(value, enum_to_str=True))
    return repr(value)


def _unknown_keys(node: Any, schema: type, prefix: str) -> list[str]:
    """Full keys of ``node`` that the dataclass ``schema`` does not declare, recursively."""
    hints = get_type_hints(schema)
    unknown: list[str] = []
    for key in node.keys():
        full_key = f"{prefix}{key}"
        if key not in hints:
            unknown.append(full_key)
            continue
        if OmegaConf.is_missing(node, key):  # reported as missing, not unknown
            continue
        hint, value = hints[key], node[key]
        if is_dataclass(hint) and isinstance(value, DictConfig):
            unknown += _unknown_keys(value, hint, f"{full_key}.")
        elif get_args(hint) and is_dataclass(get_args(hint)[0]) and OmegaConf.is_list(value):  # list[Bucket]
            for i, item in enumerate(value):
                unknown += _unknown_keys(item, get_args(hint)[0], f"{full_key}[{i}].")
    return unknown


TWO_BETAS = (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "must be two numbers in [0, 1)")

# Single-field bounds (allegro_train/config/bounds.py tables) of the groups every trainer shares
# (run, train, data, optim, parallel, checkpoint, logging); the DiT's own follow, the VAE's are in
# vae_schema.py.
COMMON_BOUNDS: Bounds = [
    (("train.max_steps", "data.batch_size", "data.text_len", "data.vae_temporal_compression",
      "data.vae_spatial_compression", "optim.grad_accum_steps", "parallel.sequence_parallel",
      "train.max_nonfinite_in_row", "checkpoint.every_steps", "checkpoint.keep_last", "logging.every_steps"),
     lambda v: v >= 1, "must be >= 1"),
    (("data.shuffle_buffer", "data.frame_stride"), lambda v: v >= 1, "must be >= 1"),
    (("data.epochs",), lambda v: v is None or v >= 1, "must be >= 1, or null for an endless loader"),
    (("data.target_fps", "data.latent_scaling_factor"), lambda v: v is None or v > 0, "must be > 0"),
    (("data.max_upscale",), lambda v: v >= 1, "must be >= 1 (1: never enlarge a sample)"),
    (("data.image_fraction",), lambda v: v is None or 0 <= v <= 1, "is a share of batches, must be in [0, 1]"),
    (("data.num_workers", "data.shard_retries", "optim.weight_decay", "optim.warmup_steps"),
     lambda v: v >= 0, "must be >= 0"),
    (("optim.lr", "optim.eps", "train.device_peak_tflops"), lambda v: v > 0, "must be > 0"),
    (("optim.grad_clip",), lambda v: v is None or v > 0, "must be > 0 (or null: off / the default)"),
    (("optim.ema_decay",), lambda v: v is None or 0 < v < 1, "must be in (0, 1), or null for no EMA"),
    (("optim.betas",), *TWO_BETAS),
    (("parallel.zero_stage",), lambda v: v in (0, 1, 2, 3), "must be 0, 1, 2 or 3"),
]
_DIT_BOUNDS: Bounds = [
    (("diffusion.num_train_timesteps", "validation.steps", "validation.fps"), lambda v: v >= 1, "must be >= 1"),
    (("diffusion.offset_noise", "ti2v.i2v", "ti2v.interpolation", "ti2v.v2v"), lambda v: v >= 0, "must be >= 0"),
    (("ti2v.v2v_frames",), lambda v: v is None or v >= 1, "must be >= 1, or null for the released uniform draw"),
    (("diffusion.flow_logit_std",), lambda v: v > 0, "must be > 0"),
    (("model.interpolation_scale_t", "model.interpolation_scale_h", "model.interpolation_scale_w",
      "diffusion.min_snr_gamma", "diffusion.flow_shift", "validation.every_steps"),
     lambda v: v is None or v > 0, "must be > 0 (or null: off / the default)"),
    (("diffusion.caption_dropout",), lambda v: 0 <= v <= 1, "is a probability, must be in [0, 1]"),
    (("diffusion.beta_start",), lambda v: 0 < v < 1, "must be in (0, 1)"),
]


def _latent_positions(bucket: BucketConfig, data: DataConfig) -> int:
    """T' x H' x W' of a bucket's latent: the unit of ``data.token_budget``."""
    t, h, w = latent_shape(bucket.frames, bucket.height, bucket.width, max(data.vae_temporal_compression, 1),
                           max(data.vae_spatial_compression, 1))
    return t * h * w


class Problems:
    """Collects ``key=value: why`` lines; ``raise_if_any`` raises them all as one ``ConfigError``."""

    def __init__(self):
        self.lines: list[str] = []
        self.bad_keys: set[str] = set()

    def check(self, ok: bool, key: str, value: Any, why: str) -> None:
        if not ok:
            self.bad_keys.add(key)
            self.lines.append(f"{key}={_show(value)}: {why}")

    def bounds(self, cfg: Any, bounds: Bounds) -> None:
        for key, value, why in bound_failures(cfg, bounds):
            self.check(False, key, value, why)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.lines))


def check_structure(cfg: Any, schema: type, source: str) -> None:
    """Keys the schema lacks (Hydra's ``+key=value`` opens the struct flag, so added keys reach here)
    and values still ``???``; a no-op on a plain dataclass instance."""
    if not isinstance(cfg, DictConfig):
        return
    unknown = _unknown_keys(cfg, schema, "")
    if unknown:
        raise ConfigError(f"keys not in the schema ({source}): {', '.join(unknown)}")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config values required but not set (???): {', '.join(missing)}")


def check_buckets(data: DataConfig, problems: Problems, spatial: int, spatial_why: str) -> None:
    """Bucket sizes the VAE can code (frames 1 or whole latent frames; sides multiples of ``spatial``),
    the token budget and the image / video mix."""
    check = problems.check
    check(bool(data.buckets), "data.buckets", data.buckets, "needs at least one bucket")
    t_comp = max(data.vae_temporal_compression, 1)
    for i, bucket in enumerate(data.buckets):
        key = f"data.buckets[{i}]"
        check(bucket.frames == 1 or (bucket.frames > 0 and bucket.frames % t_comp == 0), f"{key}.frames",
              bucket.frames, f"must be 1 (an image) or a multiple of {t_comp} (the VAE's time compression)")
        for side in ("height", "width"):
            size = getattr(bucket, side)
            check(size > 0 and size % spatial == 0, f"{key}.{side}", size,
                  f"must be a positive multiple of {spatial} ({spatial_why})")
    if data.token_budget is not None and data.buckets:
        positions = max(_latent_positions(b, data) for b in data.buckets)
        check(data.token_budget >= positions, "data.token_budget", data.token_budget,
              f"must hold one sample of the largest bucket ({positions} latent positions)")
    if data.image_fraction is not None:
        kinds = {b.frames == 1 for b in data.buckets}
        check(kinds == {True, False}, "data.image_fraction", data.image_fraction,
              "mixes image and video batches, so data.buckets needs both (frames 1 and frames > 1)")


def check_loop_and_parallel(cfg: Any, problems: Problems) -> None:
    """Watchdog times and offload options against the ZeRO stage."""
    check, loop, parallel = problems.check, cfg.train, cfg.parallel
    check(loop.watchdog_seconds is None or loop.watchdog_seconds > 0, "train.watchdog_seconds",
          loop.watchdog_seconds, "must be > 0, or null to turn the watchdog off")
    check(loop.watchdog_first_grace >= 0, "train.watchdog_first_grace", loop.watchdog_first_grace, "must be >= 0")
    check(not parallel.offload_params or parallel.zero_stage == 3, "parallel.offload_params",
          parallel.offload_params, "needs parallel.zero_stage=3 (only ZeRO-3 partitions parameters)")
    check(not parallel.offload_optimizer or parallel.zero_stage >= 1, "parallel.offload_optimizer",
          parallel.offload_optimizer, "needs parallel.zero_stage >= 1")


def validate(cfg: TrainConfig) -> None:
    """Raise ``ConfigError`` listing every key that type-checks but cannot train.

    Accepts the composed DictConfig or a plain ``TrainConfig``. Builds no model: the DiT's head
    count and patch size come from the registry's ``DiTConfig``.
    """
    check_structure(cfg, TrainConfig, "allegro_train/config/schema.py")
    problems = Problems()
    problems.bounds(cfg, COMMON_BOUNDS)
    problems.bounds(cfg, _DIT_BOUNDS)
    check, bad_keys = problems.check, problems.bad_keys

    model, data, parallel = cfg.model, cfg.data, cfg.parallel
    check(model.name in DIT_CONFIGS, "model.name", model.name, f"not a DiT size; known sizes: {sorted(DIT_CONFIGS)}")
    rope_ok = not any(key.startswith("model.interpolation_scale") for key in bad_keys)
    dit = dit_config_for(model) if model.name in DIT_CONFIGS and rope_ok else None
    try:
        parse_checkpointing(model.activation_checkpointing)
    except ValueError:
        check(False, "model.activation_checkpointing", model.activation_checkpointing,
              "use 'none', 'all', 'selective' or 'every_<k>' (k >= 1)")
    qkv_targets = sorted(set(model.lora_targets) & {"to_q", "to_k", "to_v"}) if model.lora_rank else []
    check(not (model.fused_qkv and qkv_targets), "model.fused_qkv", model.fused_qkv,
          f"LoRA targets {qkv_targets} are the Linears fusing removes from self-attention; "
          "drop model.fused_qkv or those targets")

    check(data.shards is not None, "data.shards", data.shards,
          "data=shards needs the shard paths, e.g. data.shards=\"['/data/train/{000000..000099}.tar']\"")
    check(not data.shards or not data.precomputed or data.null_caption is not None
          or cfg.diffusion.caption_dropout == 0,
          "data.null_caption", data.null_caption,
          "caption dropout needs the empty caption's T5 states (.npy) written beside the precomputed shards")
    # A token is a patch of a latent, so pixel sizes must divide into whole patches.
    spatial = max(data.vae_spatial_compression, 1) * (dit.patch_size if dit else 1)
    check_buckets(data, problems, spatial, "VAE compression x DiT patch")
    check_loop_and_parallel(cfg, problems)

    beta_start, beta_end = cfg.diffusion.beta_start, cfg.diffusion.beta_end
    check(beta_start < beta_end < 1, "diffusion.beta_end", beta_end, f"must be in (beta_start={beta_start}, 1)")

    if dit is not None and parallel.sequence_parallel >= 1:
        check(dit.num_attention_heads % parallel.sequence_parallel == 0, "parallel.sequence_parallel",
              parallel.sequence_parallel,
              f"must divide the {dit.num_attention_heads} attention heads of {model.name} (Ulysses splits heads)")

    _check_ti2v(cfg, dit, check)
    problems.raise_if_any()


def _check_ti2v(cfg: TrainConfig, dit: Optional[DiTConfig], check: Callable[[bool, str, Any, str], None]) -> None:
    ti2v = cfg.ti2v
    weights = {key: getattr(ti2v, key) for key in ("i2v", "interpolation", "v2v")}
    check(sum(weights.values()) > 0, "ti2v.i2v", ti2v.i2v,
          f"the task weights {weights} must sum to > 0 (each task is drawn with weight / sum)")
    if not ti2v.enabled:
        return
    for i, bucket in enumerate(cfg.data.buckets):
        check(bucket.frames > 1, f"data.buckets[{i}].frames", bucket.frames,
              "ti2v.enabled=true conditions clips on some of their frames, so every bucket needs frames > 1")
        if ti2v.v2v_frames is not None and ti2v.v2v > 0:
            check(ti2v.v2v_frames < bucket.frames, "ti2v.v2v_frames", ti2v.v2v_frames,
                  f"must be < the {bucket.frames} frames of data.buckets[{i}], or nothing is left to generate")
    if dit is not None:
        check(cfg.data.vae_temporal_compression == dit.in_channels, "data.vae_temporal_compression",
              cfg.data.vae_temporal_compression,
              f"the released TI2V mask lays the pixel frames out as time compression x latent frames on the "
              f"{dit.in_channels} input channels of {cfg.model.name}, so the two must be equal")
    check(cfg.validation.every_steps is None, "validation.every_steps", cfg.validation.every_steps,
          "validation sampling has no conditioning images yet; sample a TI2V run with launch/sample.py image=...")
    check(cfg.model.lora_rank == 0, "model.lora_rank", cfg.model.lora_rank,
          "LoRA freezes the DiT, and the TI2V condition embeddings start at zero and must train")
