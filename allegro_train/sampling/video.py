"""``write_video``: uint8 frames [T, H, W, 3] -> ``.mp4`` (H.264 via PyAV) or ``.npy`` (the raw array).

``.npy`` keeps the exact frames, for comparisons and metrics; mp4 is lossy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SUFFIXES = (".mp4", ".npy")


def check_out_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"out={path}: the suffix must be one of {SUFFIXES} (mp4 video or raw uint8 frames)")
    return path


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 15) -> Path:
    """Write ``frames`` uint8 [T, H, W, 3]; the folder is created. Returns the path."""
    path = check_out_path(path)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames {frames.dtype} {frames.shape}: expected uint8 [T, H, W, 3]")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, frames)
        return path
    import av  # lazy: only mp4 output needs PyAV

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"  # what players expect; needs even sizes, which latent_grid guarantees
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush
    return path
