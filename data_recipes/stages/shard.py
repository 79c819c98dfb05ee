"""Shard stage: the selected clips as WebDataset tars in the format of docs/data_format.md.

Each sample is ``<key>.mp4`` (the clip's bytes) and ``<key>.json`` (caption, source, times, size,
scores). ``webdataset.ShardWriter`` starts a new tar at ``max_count`` samples or ``max_size_mb``.
The set is written into ``<name>.partial/`` and swapped in whole, so a reader never sees a half
set and a rerun replaces the old one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from data_recipes.catalog import score_columns
from data_recipes.config import ShardConfig


def sample_metadata(row: dict[str, Any], scores: list[str]) -> dict[str, Any]:
    """The ``<key>.json`` of docs/data_format.md from a catalog row."""
    return {
        "caption": row["caption"], "source": row["source"],
        "clip_start": row["clip_start"], "clip_end": row["clip_end"],
        "fps": row["fps"], "num_frames": row["num_frames"], "height": row["height"], "width": row["width"],
        "scores": {name: row[name] for name in scores if row[name] is not None},
    }


def write_shards(rows: list[dict[str, Any]], output_dir: Path, name: str, cfg: ShardConfig) -> list[Path]:
    """Write ``rows`` (catalog rows) to ``output_dir/shards/<name>/shard-NNNNNN.tar``; return the tars."""
    import webdataset as wds  # imports torch: kept out of the worker processes, which never shard

    final = output_dir / "shards" / name
    partial = final.with_name(name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    scores = score_columns(list(rows[0])) if rows else []
    if rows:
        with wds.ShardWriter(str(partial / "shard-%06d.tar"), maxcount=cfg.max_count,
                             maxsize=cfg.max_size_mb * 1e6, verbose=0) as sink:
            for row in rows:
                sink.write({
                    "__key__": row["key"],
                    "mp4": (output_dir / row["clip_path"]).read_bytes(),
                    "json": json.dumps(sample_metadata(row, scores)).encode("utf-8"),
                })
    old = final.with_name(name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(final.glob("shard-*.tar"))
