"""The catalog: every video and every clip with all its metrics, as two Parquet tables.

``catalog/videos.parquet`` has one row per raw video (its probe fields and drop reason);
``catalog/clips.parquet`` one row per cut clip, one column per score. Selection reads only these,
so choosing another stage's subset never decodes a video again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_recipes.records import VideoRecord

CLIP_SCHEMA = pa.schema([
    ("key", pa.string()), ("source", pa.string()), ("clip_path", pa.string()),
    ("clip_start", pa.float64()), ("clip_end", pa.float64()), ("fps", pa.float64()),
    ("num_frames", pa.int64()), ("height", pa.int64()), ("width", pa.int64()), ("codec", pa.string()),
    ("cut", pa.string()), ("caption", pa.string()), ("caption_source", pa.string()),
    ("duration", pa.float64()), ("short_side", pa.int64()),
])
VIDEO_SCHEMA = pa.schema([
    ("source", pa.string()), ("key", pa.string()), ("fingerprint", pa.string()), ("signature", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("duration", pa.float64()), ("fps", pa.float64()),
    ("height", pa.int64()), ("width", pa.int64()), ("codec", pa.string()), ("clips_detected", pa.int64()),
    ("clips_too_short", pa.int64()), ("clips_kept_by_split", pa.int64()),
])


def catalog_paths(output_dir: Path) -> tuple[Path, Path]:
    return output_dir / "catalog" / "videos.parquet", output_dir / "catalog" / "clips.parquet"


def score_columns(columns: list[str]) -> list[str]:
    """The catalog columns that hold scores: all but the clip's own fields."""
    return [c for c in columns if c not in CLIP_SCHEMA.names]


def write_catalog(videos: list[VideoRecord], output_dir: Path, scorer_names: list[str]) -> tuple[Path, Path]:
    """Write both tables (atomically: a reader never sees half a file) and return their paths."""
    video_path, clip_path = catalog_paths(output_dir)
    video_path.parent.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(scorer_names + [n for v in videos for c in v.clips for n in c.scores]))
    clip_schema = CLIP_SCHEMA
    for name in names:
        clip_schema = clip_schema.append(pa.field(name, pa.float64()))
    clips = pa.Table.from_pylist([c.row() for v in videos for c in v.clips], schema=clip_schema)
    table = pa.Table.from_pylist([v.row() for v in videos], schema=VIDEO_SCHEMA)
    for path, data in ((video_path, table), (clip_path, clips)):
        tmp = path.with_name(path.name + ".partial")
        pq.write_table(data, tmp)
        os.replace(tmp, path)
    return video_path, clip_path
