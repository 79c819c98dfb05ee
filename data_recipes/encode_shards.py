"""Raw shards -> precomputed shards (docs/data_format.md): VAE moments and T5 states per clip.

One output tar per input tar, under the same name, so a finished output shard marks its input as
done and a rerun skips it. Each sample goes through the loader's own per-sample step
(``allegro_train.data.samples.prepare`` with ``precomputed=false``: bucket choice, frame window,
decode, resize and centre-crop), so a stored latent encodes exactly the pixels the online path
would train on. ``build_loader`` itself is not used: it is endless, shuffles across shards and
batches by bucket, and drops the sample's JSON, while a conversion wants one ordered pass per shard
that keeps the metadata and maps input to output shards.

Per output shard ``<name>.tar`` a ``<name>.stats.json`` records its counts; ``summary.json`` sums
all of them. Both are written under a temporary name and renamed, the tar last: a shard is done
when its tar exists.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from allegro_train.config.schema import DecodeBackend, Precision
from allegro_train.data.buckets import BucketTable
from allegro_train.data.decode import BadSample, check_backend
from allegro_train.data.samples import SampleSpec, prepare
from allegro_train.data.shards import expand_shards, read_shard
from allegro_train.models.io import atomic_write
from allegro_train.models.text import T5TextEncoder, clean_caption
from allegro_train.models.vae import VideoVAE
from data_recipes.precompute_config import CONTENT_KEYS, CaptionText, PrecomputeConfig, PrecomputeConfigError

log = logging.getLogger("data_recipes.precompute")

DTYPES = {Precision.fp32: torch.float32, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}
SETTINGS_NAME, SUMMARY_NAME, NULL_NAME = "settings.json", "summary.json", "null.t5.npy"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def caption_text(caption: str, mode: CaptionText) -> str:
    mode = CaptionText(mode)
    if mode is CaptionText.clean:
        return clean_caption(caption)
    return caption.lower().strip() if mode is CaptionText.lower else caption


class Encoders:
    """The VAE and T5 of a run, and the one conversion step: (video, caption) -> stored arrays."""

    def __init__(self, cfg: PrecomputeConfig):
        device = torch.device(cfg.device)
        self.vae = VideoVAE.from_pretrained(cfg.vae, torch_dtype=DTYPES[Precision(cfg.vae_dtype)], device=device)
        self.vae.eval().requires_grad_(False)
        if cfg.vae_tiling.enabled:
            self.vae.enable_tiling(tuple(cfg.vae_tiling.tile), tuple(cfg.vae_tiling.overlap))
        self.text = T5TextEncoder.from_pretrained(cfg.text_encoder, max_length=cfg.max_length,
                                                  dtype=DTYPES[Precision(cfg.text_dtype)], device=device)
        self.caption_mode = CaptionText(cfg.caption_text)

    @torch.no_grad()
    def moments(self, video: torch.Tensor) -> np.ndarray:
        """video [3, F, H, W] in [-1, 1] -> float16 [8, T', H', W'] = (mean, logvar), unscaled.

        An image (F = 1) is repeated to the VAE's time compression, a still clip of one latent
        frame: the VideoVAE only takes whole groups of frames (docs/text.md).
        """
        weight = next(self.vae.parameters())
        x = self.vae.as_clip(video[None]).to(weight.device, weight.dtype)  # [1, 3, F, H, W]
        posterior = self.vae.encode(x)  # mean, logvar [1, 4, T', H', W']
        return torch.cat([posterior.mean, posterior.logvar], dim=1)[0].float().cpu().numpy().astype(np.float16)

    def states(self, caption: str) -> np.ndarray:
        """caption -> float16 [L, D], unpadded (EOS included)."""
        states, mask = self.text.encode([caption_text(caption, self.caption_mode)])  # [1, L, D], [1, L]
        return states[0, : int(mask.sum())].float().cpu().numpy().astype(np.float16)


def convert_shard(url: str, out: Path, spec: SampleSpec, encoders: Encoders, retries: int) -> dict[str, Any]:
    """Write the precomputed form of shard ``url`` to ``out``; return its counts."""
    import webdataset as wds

    stats: dict[str, Any] = {"input": url, "samples_in": 0, "samples_written": 0, "skipped": Counter(),
                             "buckets": Counter(), "read_error": None}

    def failed(_: str, error: Exception) -> None:  # read_shard retried and gave up: the rest is lost
        stats["read_error"] = repr(error)

    def write_tar(tmp: Path) -> None:
        with open(tmp, "wb") as stream, wds.TarWriter(stream) as sink:
            for _, raw in read_shard(url, 0, retries, failed):
                stats["samples_in"] += 1
                try:
                    index, sample = prepare(raw, 0, spec)
                    meta = json.loads(raw["json"])
                    moments = encoders.moments(sample["video"])
                    states = encoders.states(sample["caption"])
                    for name, array in (("latent.npy", moments), ("t5.npy", states)):
                        if not np.isfinite(array).all():  # e.g. beyond float16's range
                            raise BadSample("not_finite", f"{url}:{raw['__key__']}.{name} is not finite in float16")
                except BadSample as bad:
                    stats["skipped"][bad.reason] += 1
                    log.debug("skipped %s", bad)
                    continue
                bucket = spec.table.buckets[index]
                sink.write({"__key__": raw["__key__"], "json": json.dumps({**meta, "bucket": list(bucket.as_tuple())}).encode(),
                            "latent.npy": npy_bytes(moments), "t5.npy": npy_bytes(states)})
                stats["samples_written"] += 1
                stats["buckets"][bucket.name] += 1

    def write_tar_then_stats(tmp: Path) -> None:  # stats before the tar's rename: done == the tar exists
        write_tar(tmp)
        text = json.dumps(stats, indent=2, sort_keys=True) + "\n"
        atomic_write(stats_path(out), lambda p: p.write_text(text))

    atomic_write(out, write_tar_then_stats)
    return stats


def stats_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".tar") + ".stats.json")


def output_names(urls: list[str]) -> list[str]:
    """Each input's file name (``.tar`` added if absent); two inputs with one name are refused."""
    names = [Path(url.split("::")[0]).name for url in urls]
    names = [name if name.endswith(".tar") else name + ".tar" for name in names]
    seen: dict[str, str] = {}
    for url, name in zip(urls, names):
        if name in seen:
            raise PrecomputeConfigError(f"shards: {seen[name]!r} and {url!r} would both write {name}; "
                                        "convert them into separate output_dirs")
        seen[name] = url
    return names


def check_settings(cfg: PrecomputeConfig, output_dir: Path) -> None:
    """Record the content-shaping settings on the first run; refuse a rerun that changes them."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    current = {key: resolved[key] for key in CONTENT_KEYS}
    path = output_dir / SETTINGS_NAME
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in CONTENT_KEYS if saved.get(k) != current[k])
        if changed:
            raise PrecomputeConfigError(
                f"{path}: this output_dir was written with other settings; changed: "
                + ", ".join(f"{k}={current[k]!r} (was {saved.get(k)!r})" for k in changed)
                + ". Use a new output_dir, or delete it to start over")
        return
    atomic_write(path, lambda p: p.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n"))


def summarize(urls: list[str], names: list[str], output_dir: Path, converted: int) -> dict[str, Any]:
    """Counts over every finished output shard (from any run or rank); ``pending``: inputs not done."""
    skipped, buckets, done, pending, failed = Counter(), Counter(), 0, [], []
    samples_in = samples_written = 0
    for url, name in zip(urls, names):
        if not (output_dir / name).is_file():
            pending.append(url)
            continue
        stats = json.loads(stats_path(output_dir / name).read_text())
        done += 1
        samples_in += stats["samples_in"]
        samples_written += stats["samples_written"]
        skipped.update(stats["skipped"])
        buckets.update(stats["buckets"])
        if stats["read_error"]:
            failed.append({"input": url, "error": stats["read_error"]})
    return {"shards_in": len(urls), "shards_done": done, "shards_converted_this_run": converted,
            "pending": pending, "read_errors": failed, "samples_in": samples_in,
            "samples_written": samples_written, "skipped": dict(sorted(skipped.items())),
            "buckets": dict(sorted(buckets.items())), "null_caption": str(output_dir / NULL_NAME)}


def run(cfg: PrecomputeConfig) -> dict[str, Any]:
    """Convert this rank's unfinished shards; write null.t5.npy and summary.json; return the summary."""
    urls = expand_shards([cfg.shards])
    names = output_names(urls)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_settings(cfg, output_dir)
    check_backend(DecodeBackend(cfg.decode_backend))

    encoders = Encoders(cfg)
    temporal, spatial, _ = encoders.vae.config.compression
    table = BucketTable([(b.frames, b.height, b.width) for b in cfg.buckets], batch_size=1, token_budget=None,
                        max_upscale=cfg.max_upscale, temporal=temporal, spatial=spatial)
    for i, b in enumerate(table.buckets):
        if not (b.frames == 1 or b.frames % temporal == 0) or b.height % spatial or b.width % spatial:
            raise PrecomputeConfigError(f"buckets[{i}]={b.name}: frames must be 1 or a multiple of {temporal}, "
                                        f"height and width multiples of {spatial} (the VAE's compression)")
    spec = SampleSpec(table=table, precomputed=False, text_len=cfg.max_length, latent_scaling_factor=1.0,
                      backend=DecodeBackend(cfg.decode_backend), frame_stride=cfg.frame_stride,
                      target_fps=cfg.target_fps, seed=cfg.seed)

    null = encoders.states("")
    atomic_write(output_dir / NULL_NAME, lambda p: p.write_bytes(npy_bytes(null)))
    converted = 0
    for url, name in list(zip(urls, names))[cfg.rank::cfg.world_size]:
        out = output_dir / name
        if out.is_file():
            log.info("%s exists: skipping %s", out, url)
            continue
        stats = convert_shard(url, out, spec, encoders, cfg.shard_retries)
        converted += 1
        log.info("%s: %d of %d samples written, skipped %s", out, stats["samples_written"], stats["samples_in"],
                 dict(stats["skipped"]))

    summary = summarize(urls, names, output_dir, converted)
    atomic_write(output_dir / SUMMARY_NAME, lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary
