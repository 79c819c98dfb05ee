"""Video I/O shared by the stages: PyAV to read, the ffmpeg command line to cut.

Every failure to read or cut a video raises ``InputError("corrupt", ...)`` naming the file, so
the pipeline counts the video and goes on.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import av
import numpy as np

from data_recipes.records import InputError


@dataclass
class VideoInfo:
    duration: float  # seconds
    fps: float
    height: int
    width: int
    codec: str
    num_frames: int  # counted from packets when ``count_frames``, else the header's (0 if unknown)


def probe(path: Path, count_frames: bool = False) -> VideoInfo:
    """Read a video's stream header and decode its first frame (a header alone proves little)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError("corrupt", f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                raise InputError("corrupt", f"{path}: no duration in the container or stream")
            info = VideoInfo(duration=duration, fps=float(rate) if rate else 0.0, height=stream.height,
                             width=stream.width, codec=stream.codec_context.name, num_frames=stream.frames)
            next(container.decode(stream))
            if count_frames:
                container.seek(0)
                info.num_frames = sum(1 for p in container.demux(stream) if p.size)
            return info
    except (av.FFmpegError, StopIteration, UnicodeDecodeError) as err:
        raise InputError("corrupt", f"{path}: cannot decode ({type(err).__name__}: {err})") from err


def keyframe_times(path: Path) -> list[float]:
    """Presentation times (s) of the video keyframes, from packets only (no decoding)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sorted(float(p.pts * stream.time_base) for p in container.demux(stream)
                          if p.is_keyframe and p.pts is not None)
    except av.FFmpegError as err:
        raise InputError("corrupt", f"{path}: cannot read packets ({err})") from err


def require_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("the ffmpeg command is not on PATH; the split stage cuts clips with it "
                           "(Debian: apt-get install ffmpeg)")
    return exe


def cut(src: Path, dst: Path, start: float, num_frames: int, copy: bool, crf: int, preset: str) -> None:
    """Write ``num_frames`` frames of ``src`` from ``start`` seconds to ``dst`` (video only).

    ``copy`` copies packets, exact only when ``start`` is a keyframe; otherwise libx264 re-encodes
    (input-side -ss decodes from the previous keyframe and drops frames up to ``start``). The clip is
    written to a temporary name and renamed, so a killed run never leaves a half clip.
    """
    codec = ["-c:v", "copy"] if copy else ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
    tmp = dst.with_name(dst.stem + ".partial.mp4")
    cmd = [require_ffmpeg(), "-nostdin", "-v", "error", "-y", "-ss", f"{start:.6f}", "-i", str(src),
           "-map", "0:v:0", "-an", "-sn", "-dn", "-frames:v", str(num_frames), *codec, str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise InputError("corrupt", f"{src}: ffmpeg could not cut {start:.3f}s+{num_frames} frames: "
                                    f"{result.stderr.strip()[-500:]}")
    tmp.replace(dst)


@dataclass
class ClipFrames:
    """Frames sampled from a clip for scoring, scaled so the short side is at most the scoring size.

    ``frames[i]`` is an evenly spaced sample and ``next_frames[i]`` the frame right after it, so
    motion scorers see one frame step while the samples span the whole clip.
    """

    frames: np.ndarray  # uint8 [N, H, W, 3] RGB
    next_frames: np.ndarray  # uint8 [N, H, W, 3] RGB
    fps: float
    caption: Optional[str] = None  # the clip's caption, for scorers that compare text and frames


def sample_frames(path: Path, num_frames: int, total_frames: int, short_side: int) -> ClipFrames:
    """Decode ``num_frames`` evenly spaced frames of a clip and the frame after each."""
    if total_frames < 2:
        raise InputError("corrupt", f"{path}: {total_frames} frame(s), scoring needs at least 2")
    anchors = sorted(set(np.linspace(0, total_frames - 2, num_frames).round().astype(int).tolist()))
    wanted = set(anchors) | {a + 1 for a in anchors}
    decoded: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            scale = min(1.0, short_side / min(stream.height, stream.width))
            size = dict(width=max(2, round(stream.width * scale / 2) * 2), height=max(2, round(stream.height * scale / 2) * 2))
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    decoded[index] = frame.to_ndarray(format="rgb24", **size)
                if index >= max(wanted):
                    break
            fps = float(stream.average_rate or 0)
    except av.FFmpegError as err:
        raise InputError("corrupt", f"{path}: cannot decode frames ({err})") from err
    anchors = [a for a in anchors if a in decoded and a + 1 in decoded]
    if not anchors:
        raise InputError("corrupt", f"{path}: decoded none of the sampled frames")
    return ClipFrames(frames=np.stack([decoded[a] for a in anchors]),
                      next_frames=np.stack([decoded[a + 1] for a in anchors]), fps=fps)
