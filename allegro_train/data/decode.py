"""Shard members -> tensors: JSON, ``.npy`` (never pickled), images and video through a chosen backend.

Only these formats are decoded; webdataset's automatic decoders (which include pickle) are not
used. The video backend is the config's choice (``data.decode_backend``) and is never swapped
for another when it fails: a missing backend is an error at start-up, a clip it cannot decode is
a counted bad sample. All three backends return the same frames (H.264 decoding is exact), so a
run can change backend without changing its data.
"""

from __future__ import annotations

import io
import json
import random
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from allegro_train.config.schema import DecodeBackend


class BadSample(Exception):
    """A sample the loader skips and counts under ``reason`` (``undecodable``, ``too_short``, ...)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def load_json(data: bytes, where: str) -> dict:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadSample("bad_metadata", f"{where}: not JSON ({error})") from None
    if not isinstance(value, dict):
        raise BadSample("bad_metadata", f"{where}: JSON is a {type(value).__name__}, not an object")
    return value


def load_npy(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:  # also raised for object arrays, which would need pickle
        raise BadSample("undecodable", f"{where}: not a plain .npy array ({error})") from None


def usable_frames(num_frames: int, fps: Optional[float], stride: int, target_fps: Optional[float]) -> int:
    """How many frames a clip yields once sampled every ``stride`` frames or at ``target_fps``."""
    step = _step(fps, stride, target_fps)
    return int((num_frames - 1) // step) + 1 if num_frames >= 1 else 0


def frame_indices(num_frames: int, fps: Optional[float], frames: int, stride: int, target_fps: Optional[float],
                  rng: random.Random) -> list[int]:
    """``frames`` source indices, evenly ``step`` apart, starting at a seeded random offset."""
    step = _step(fps, stride, target_fps)
    slack = num_frames - 1 - (frames - 1) * step
    if slack < 0:
        raise BadSample("too_short", f"{num_frames} frames cannot give {frames} at step {step:g}")
    start = rng.uniform(0, slack) if target_fps is not None else rng.randint(0, int(slack))
    return [min(int(round(start + i * step)), num_frames - 1) for i in range(frames)]


def _step(fps: Optional[float], stride: int, target_fps: Optional[float]) -> float:
    if target_fps is None:
        return float(stride)
    if not fps or fps <= 0:
        raise BadSample("bad_metadata", f"data.target_fps={target_fps} needs the clip's fps; json has {fps!r}")
    if fps < target_fps:  # would repeat frames: not the motion the bucket promises
        raise BadSample("low_fps", f"clip at {fps:g} fps cannot be sampled at data.target_fps={target_fps:g}")
    return fps / target_fps


# ------------------------------------------------------------------------------------ backends
# Each takes the container's bytes and sorted frame indices and returns uint8 [F, H, W, 3] RGB.


def _decord(data: bytes, indices: list[int]) -> np.ndarray:
    import decord

    reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    _check_length(len(reader), indices)
    return reader.get_batch(indices).asnumpy()


def _pyav(data: bytes, indices: list[int]) -> np.ndarray:
    import av

    wanted, frames, count = set(indices), {}, 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # like the other backends: parallelism comes from loader workers
        for count, frame in enumerate(container.decode(stream), start=1):
            if count - 1 in wanted:
                frames[count - 1] = frame.to_ndarray(format="rgb24")
            if count > indices[-1]:
                break
    _check_length(count, indices)
    return np.stack([frames[i] for i in indices])


def _torchcodec(data: bytes, indices: list[int]) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(data, dimension_order="NHWC", num_ffmpeg_threads=1)
    _check_length(decoder.metadata.num_frames, indices)
    return decoder.get_frames_at(indices).data.numpy()


def _check_length(available: Optional[int], indices: list[int]) -> None:
    if available is not None and indices[-1] >= available:
        raise BadSample("too_short", f"the video has {available} frames, frame #{indices[-1]} was asked for")


_BACKENDS: dict[DecodeBackend, tuple[str, Callable[[bytes, list[int]], np.ndarray]]] = {
    DecodeBackend.decord: ("decord", _decord),
    DecodeBackend.pyav: ("av", _pyav),
    DecodeBackend.torchcodec: ("torchcodec.decoders", _torchcodec),
}


def check_backend(backend: DecodeBackend) -> None:
    """Import the backend now, so a missing one fails at start-up naming the config key."""
    module, _ = _BACKENDS[DecodeBackend(backend)]
    try:
        __import__(module)
    except Exception as error:  # ImportError, or a torchcodec that cannot load ffmpeg's libraries
        raise RuntimeError(f"data.decode_backend={DecodeBackend(backend).value}: cannot import {module} ({error}); "
                           f"install it (see docs/data.md) or pick another backend") from error


def decode_video(data: bytes, indices: list[int], backend: DecodeBackend, where: str) -> torch.Tensor:
    """uint8 [F, H, W, 3] of the frames at ``indices`` (sorted)."""
    _, fn = _BACKENDS[DecodeBackend(backend)]
    try:
        frames = fn(data, indices)
    except BadSample as bad:
        raise BadSample(bad.reason, f"{where}: {bad.detail}") from None
    except Exception as error:  # each backend raises its own types for a corrupt stream
        raise BadSample("undecodable", f"{where}: {DecodeBackend(backend).value} failed ({error!r})") from None
    return torch.from_numpy(np.ascontiguousarray(frames))


def decode_image(data: bytes, where: str) -> torch.Tensor:
    """uint8 [1, H, W, 3] of a JPEG or PNG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises several types for truncated or foreign files
        raise BadSample("undecodable", f"{where}: not a readable image ({error!r})") from None
    return torch.from_numpy(array.copy())[None]


def resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float32 [3, F, height, width] in [-1, 1]: cover the size, centre-crop.

    Scaled by one factor (no stretching), antialiased, in uint8: torch's channels-last uint8
    resize is ~10x faster on CPU than the float one, and the frames are 8-bit anyway.
    """
    n, h, w, _ = frames.shape
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    x = frames.permute(0, 3, 1, 2)  # [F, 3, H, W], channels-last in memory
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    x = x[:, :, top:top + height, left:left + width]  # [F, 3, height, width]
    return x.permute(1, 0, 2, 3).float() / 127.5 - 1  # [3, F, height, width]


def sample_latent(moments: np.ndarray, generator: torch.Generator, scaling: float) -> torch.Tensor:
    """VAE moments [2C, T', H', W'] (mean, then log-variance) -> float32 [C, T', H', W'] sample x scaling."""
    moments_t = torch.from_numpy(moments.astype(np.float32))
    mean, logvar = moments_t.chunk(2, dim=0)
    noise = torch.randn(mean.shape, generator=generator)
    return (mean + torch.exp(0.5 * logvar) * noise) * scaling


def check_finite(x: torch.Tensor, where: str) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise BadSample("not_finite", f"{where}: contains NaN or inf")
    return x

