"""report.json: what a run saw, kept and dropped, computed from the catalog so every run reports
the same way whether it curated videos or only re-selected.

``dropped`` counts raw videos for the video reasons (corrupt, too_short, low_fps, low_resolution,
bad_sidecar), clip windows for ``scene_too_short``, and cataloged clips for ``select:<condition>``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pyarrow.parquet as pq

from data_recipes.config import Stage
from data_recipes.stages.select import Selection


def build_report(video_catalog: Path, clip_catalog: Path, selection: Optional[Selection], name: str,
                 shards: list[Path], stages: list[Stage]) -> dict[str, Any]:
    videos = pq.read_table(video_catalog).to_pylist()
    clips = pq.read_table(clip_catalog, columns=["key", "caption"]).to_pylist()
    dropped = Counter(v["status"] for v in videos if v["status"] != "ok")
    too_short = sum(v["clips_too_short"] for v in videos)
    if too_short:
        dropped["scene_too_short"] = too_short
    kept = selection.kept if selection is not None else clips
    if selection is not None:
        dropped.update(selection.dropped)
    return {
        "videos_seen": len(videos),
        "videos_corrupt": sum(v["status"] == "corrupt" for v in videos),
        "clips_detected": sum(v["clips_detected"] for v in videos),
        "clips_cataloged": len(clips),
        "clips_kept": len(kept),
        "clips_uncaptioned": sum(row["caption"] is None for row in kept),
        "dropped": dict(sorted(dropped.items())),
        "selection": None if selection is None else {
            "name": name, "applied": selection.applied, "skipped_unscored": selection.skipped},
        "shards": [str(p) for p in shards],
        "stages": [s.value for s in stages],
        "catalog": {"videos": str(video_catalog), "clips": str(clip_catalog)},
    }
