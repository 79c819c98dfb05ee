"""Probe stage: read a raw video's header with PyAV and drop it when too short, slow or small.

These are the report's first funnel step (under 2 s, under 23 fps, under 360p): checked before
any decoding beyond the first frame, so most rejects cost milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from data_recipes.config import ProbeConfig
from data_recipes.media import VideoInfo, probe
from data_recipes.records import VideoRecord


def limits_failed(info: VideoInfo, cfg: ProbeConfig) -> Optional[tuple[str, str]]:
    """The first limit ``info`` fails as (report reason, message), or None when it passes them all."""
    if info.duration < cfg.min_duration:
        return "too_short", f"{info.duration:.2f} s < probe.min_duration={cfg.min_duration}"
    if info.fps < cfg.min_fps:
        return "low_fps", f"{info.fps:.2f} fps < probe.min_fps={cfg.min_fps}"
    if min(info.height, info.width) < cfg.min_short_side:
        return "low_resolution", f"{info.width}x{info.height} < probe.min_short_side={cfg.min_short_side}"
    return None


def probe_video(path: Path, record: VideoRecord, cfg: ProbeConfig) -> Optional[VideoInfo]:
    """Fill ``record``'s stream fields; return the info if the video passes the limits, else None
    (with ``record.status`` and ``record.error`` saying why). Unreadable files raise ``InputError``."""
    info = probe(path)
    record.duration, record.fps, record.height, record.width, record.codec = (
        info.duration, info.fps, info.height, info.width, info.codec)
    failed = limits_failed(info, cfg)
    if failed is not None:
        record.status, record.error = failed
        return None
    return info
