"""One raw shard sample -> (bucket index, tensors), or ``BadSample`` naming why it is skipped.

Two paths, per docs/data_format.md. Precomputed: the sample names its bucket (``json.bucket``),
carries VAE moments and T5 states, and its latent is drawn here. Online: the bucket is chosen from
the clip's size and usable frames, then the frames are decoded, resized and cropped to it.
Every random choice (latent noise, the clip's start frame) is seeded by (run seed, epoch, key),
so re-preparing a sample after a resume gives the same tensors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional

import torch

from allegro_train.config.schema import DecodeBackend
from allegro_train.data.buckets import BucketTable
from allegro_train.data.decode import (BadSample, check_finite, decode_image, decode_video, frame_indices,
                                       load_json, load_npy, resize_crop, sample_latent, usable_frames)
from allegro_train.data.state import derive_seed

_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")


@dataclass(frozen=True)
class SampleSpec:
    """The part of ``DataConfig`` that turns a raw sample into tensors."""

    table: BucketTable
    precomputed: bool
    text_len: int
    latent_scaling_factor: float
    backend: DecodeBackend
    frame_stride: int
    target_fps: Optional[float]
    seed: int


def prepare(raw: dict[str, Any], epoch: int, spec: SampleSpec) -> tuple[int, dict[str, Any]]:
    """(bucket index, sample); precomputed samples hold ``latents`` [C, T', H', W'] and
    ``text_states`` [L, D]; online ones ``video`` [3, F, H, W] in [-1, 1] and ``caption``."""
    key = raw["__key__"]
    where = f"{raw.get('__url__')}:{key}"
    if "json" not in raw:
        raise BadSample("no_metadata", f"{where}: no {key}.json member")
    meta = load_json(raw["json"], f"{where}.json")
    if spec.precomputed:
        return _precomputed(raw, meta, key, where, epoch, spec)
    return _online(raw, meta, key, where, epoch, spec)


def _precomputed(raw: dict, meta: dict, key: str, where: str, epoch: int,
                 spec: SampleSpec) -> tuple[int, dict[str, Any]]:
    for member, reason in (("latent.npy", "no_latent"), ("t5.npy", "no_text")):
        if member not in raw:
            raise BadSample(reason, f"{where}: no {key}.{member} member (data.precomputed=true)")
    bucket = meta.get("bucket")
    if not (isinstance(bucket, list) and len(bucket) == 3 and all(isinstance(v, int) for v in bucket)):
        raise BadSample("bad_metadata", f"{where}.json: bucket={bucket!r}, expected [frames, height, width]")
    index = spec.table.index(*bucket)
    if index is None:
        raise BadSample("bucket_not_in_table", f"{where}.json: bucket {bucket} is not in data.buckets "
                        f"{[b.name for b in spec.table.buckets]}")
    moments = load_npy(raw["latent.npy"], f"{where}.latent.npy")
    grid = spec.table.latent_shapes[index]
    if moments.ndim != 4 or moments.shape[0] % 2 or tuple(moments.shape[1:]) != grid:
        raise BadSample("bad_latent", f"{where}.latent.npy: shape {moments.shape}, expected [2C, {', '.join(map(str, grid))}] "
                        f"for bucket {bucket}")
    text = load_npy(raw["t5.npy"], f"{where}.t5.npy")
    if text.ndim != 2 or text.shape[0] < 1:
        raise BadSample("bad_text", f"{where}.t5.npy: shape {text.shape}, expected [L >= 1, D]")
    if text.shape[0] > spec.text_len:  # cutting states would not equal encoding a shorter caption
        raise BadSample("text_too_long", f"{where}.t5.npy: {text.shape[0]} tokens > data.text_len={spec.text_len}")
    generator = torch.Generator().manual_seed(derive_seed(spec.seed, "latent", epoch, key))
    latents = sample_latent(moments, generator, spec.latent_scaling_factor)  # [C, T', H', W']
    states = torch.from_numpy(text.astype("float32"))  # [L, D]
    return index, {"latents": check_finite(latents, f"{where}.latent.npy"),
                   "text_states": check_finite(states, f"{where}.t5.npy"), "key": key}


def _online(raw: dict, meta: dict, key: str, where: str, epoch: int, spec: SampleSpec) -> tuple[int, dict[str, Any]]:
    caption = meta.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise BadSample("no_caption", f"{where}.json: caption={caption!r}")
    image_ext = next((ext for ext in _IMAGE_EXTENSIONS if ext in raw), None)
    if "mp4" in raw:
        num_frames, height, width = (_meta_int(meta, name, where) for name in ("num_frames", "height", "width"))
        fps = meta.get("fps")
        usable = usable_frames(num_frames, fps, spec.frame_stride, spec.target_fps)
        index, reason = spec.table.assign(usable, height, width, is_image=False)
        if index is None:
            raise BadSample(reason, f"{where}: {num_frames} frames ({usable} usable) at {height}x{width}")
        rng = random.Random(derive_seed(spec.seed, "frames", epoch, key))
        indices = frame_indices(num_frames, fps, spec.table.buckets[index].frames, spec.frame_stride,
                                spec.target_fps, rng)
        frames = decode_video(raw["mp4"], indices, spec.backend, f"{where}.mp4")  # [F, H, W, 3] uint8
    elif image_ext is not None:
        frames = decode_image(raw[image_ext], f"{where}.{image_ext}")  # [1, H, W, 3] uint8
        index, reason = spec.table.assign(1, frames.shape[1], frames.shape[2], is_image=True)
        if index is None:
            raise BadSample(reason, f"{where}.{image_ext}: {frames.shape[1]}x{frames.shape[2]} image")
    else:
        raise BadSample("no_media", f"{where}: no .mp4 or image member (data.precomputed=false)")
    bucket = spec.table.buckets[index]
    video = resize_crop(frames, bucket.height, bucket.width)  # [3, F, H, W] in [-1, 1]
    return index, {"video": video, "caption": caption, "key": key}


def _meta_int(meta: dict, name: str, where: str) -> int:
    value = meta.get(name)
    if not isinstance(value, int) or value < 1:
        raise BadSample("bad_metadata", f"{where}.json: {name}={value!r}, expected a positive int")
    return value
