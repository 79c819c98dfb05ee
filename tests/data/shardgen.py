"""Tiny shards for the loader tests, in the format of docs/data_format.md.

Videos are ffmpeg's ``testsrc`` pattern encoded to H.264 through PyAV's bundled libav (no ffmpeg
binary needed); precomputed samples carry random VAE moments and short T5 states.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np
import webdataset as wds

from allegro_train.config.schema import BucketConfig, DataConfig

# Two latent buckets, so batches must sort samples by bucket; text lengths vary to exercise padding.
LATENT_BUCKETS = [(8, 32, 32), (1, 32, 64)]


@functools.lru_cache(maxsize=None)
def encode_testsrc(frames: int, height: int, width: int, fps: int = 8) -> bytes:
    """An H.264 mp4 of ``frames`` frames of ffmpeg's testsrc at height x width."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        graph = av.filter.Graph()
        src = graph.add("testsrc", f"size={width}x{height}:rate={fps}")
        src.link_to(graph.add("buffersink"))
        graph.configure()
        for _ in range(frames):
            frame = graph.pull().reformat(format="yuv420p")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def png(height: int, width: int, seed: int = 0) -> bytes:
    from PIL import Image

    array = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def video_sample(key: str, frames: int, height: int, width: int, caption: Optional[str] = "a test pattern",
                 fps: int = 8) -> dict:
    meta = {"caption": caption, "fps": float(fps), "num_frames": frames, "height": height, "width": width}
    return {"__key__": key, "json": json.dumps(meta).encode(), "mp4": encode_testsrc(frames, height, width, fps)}


def image_sample(key: str, height: int, width: int, caption: str = "noise") -> dict:
    meta = {"caption": caption, "num_frames": 1, "height": height, "width": width}
    return {"__key__": key, "json": json.dumps(meta).encode(), "png": png(height, width)}


def latent_sample(key: str, bucket: tuple[int, int, int], text_tokens: int, text_width: int = 16,
                  seed: int = 0) -> dict:
    """Moments float16 [8, T', H', W'] for ``bucket`` (compression 4 x 8 x 8) and T5 states [L, D]."""
    rng = np.random.default_rng(seed)
    frames, height, width = bucket
    grid = (1 if frames == 1 else frames // 4, height // 8, width // 8)
    moments = np.concatenate([rng.normal(size=(4, *grid)), np.full((4, *grid), -2.0)]).astype(np.float16)
    text = rng.normal(size=(text_tokens, text_width)).astype(np.float16)
    meta = {"caption": f"caption of {key}", "bucket": list(bucket)}
    return {"__key__": key, "json": json.dumps(meta).encode(), "latent.npy": npy(moments), "t5.npy": npy(text)}


def write_shard(path: Path, samples: list[dict]) -> str:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return str(path)


def data_config(shards, **kw) -> DataConfig:
    buckets = kw.pop("buckets", LATENT_BUCKETS)
    cfg = DataConfig(shards=[shards] if isinstance(shards, str) else shards,
                     buckets=[BucketConfig(frames=f, height=h, width=w) for f, h, w in buckets])
    cfg.num_workers, cfg.batch_size, cfg.shuffle_buffer = 0, 2, 4
    for key, value in kw.items():
        assert hasattr(cfg, key), key
        setattr(cfg, key, value)
    return cfg
