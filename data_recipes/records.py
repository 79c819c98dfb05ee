"""The records stages pass along: one ``VideoRecord`` per raw video holding its ``ClipRecord``s.

Records are plain dataclasses so a worker process can return them and a JSON work file can hold
them; the catalog flattens them into Parquet rows.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional


class InputError(Exception):
    """A raw video that cannot be curated; counted under ``reason`` in the report, never fatal."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class ClipRecord:
    key: str  # "<source key>_<clip index>", the shard key: no dots
    source: str  # path of the raw video relative to input_dir
    clip_path: str  # the cut clip, relative to output_dir
    clip_start: float  # seconds in the source
    clip_end: float
    fps: float
    num_frames: int
    height: int
    width: int
    codec: str
    cut: str  # "copy" (packets copied from the source) or "encode" (re-encoded with libx264)
    caption: Optional[str] = None
    caption_source: Optional[str] = None  # the captioner that wrote ``caption``
    scores: dict[str, Optional[float]] = field(default_factory=dict)  # None: not scorable (catalog NULL)

    def row(self) -> dict[str, Any]:
        """A flat catalog row: every field, derived sizes, one column per score."""
        row = {k: v for k, v in asdict(self).items() if k != "scores"}
        row["duration"] = round(self.clip_end - self.clip_start, 6)
        row["short_side"] = min(self.height, self.width)
        row.update(self.scores)
        return row


@dataclass
class VideoRecord:
    source: str  # relative to input_dir
    key: str
    fingerprint: str  # size and mtime: a changed file is curated again
    signature: str  # hash of the per-video stage settings: changed settings curate again
    status: str = "ok"  # "ok" or the drop reason (corrupt, too_short, low_fps, low_resolution, ...)
    error: Optional[str] = None
    duration: Optional[float] = None
    fps: Optional[float] = None
    height: Optional[int] = None
    width: Optional[int] = None
    codec: Optional[str] = None
    clips_detected: int = 0  # clip windows from the detected scenes, before the length rule
    clips_too_short: int = 0
    clips: list[ClipRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VideoRecord":
        clips = [ClipRecord(**c) for c in data.pop("clips")]
        return cls(**data, clips=clips)

    def row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k != "clips"}
        row["clips_kept_by_split"] = len(self.clips)
        return row


def source_key(relative: Path) -> str:
    """A shard-safe key from a path relative to input_dir: ``a/b.c.mp4`` -> ``a_b_c`` (no dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(relative.with_suffix("")))


def fingerprint(path: Path) -> str:
    """Size and modification time: cheap to compute for every raw file on every rerun."""
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"
