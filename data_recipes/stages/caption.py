"""Caption stage: each clip takes the first caption its captioners give; none leaves it uncaptioned.

Uncaptioned clips stay in the catalog (and shards, with ``caption: null``) and are counted in
report.json, so captioning can run later over the catalog instead of blocking curation.
"""

from __future__ import annotations

from pathlib import Path

from data_recipes.captioners import Captioner
from data_recipes.records import ClipRecord


def caption_clips(source_path: Path, clips: list[ClipRecord], captioners: list[Captioner], output_dir: Path) -> None:
    """Fill ``clip.caption`` and ``clip.caption_source`` in place."""
    for captioner in captioners:
        todo = [clip for clip in clips if clip.caption is None]
        if not todo:
            return
        for clip, caption in zip(todo, captioner.caption(source_path, todo, output_dir), strict=True):
            if caption is not None:
                clip.caption, clip.caption_source = caption, captioner.name
