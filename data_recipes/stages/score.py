"""Score stage: sample each clip's frames once and let every configured scorer write its column."""

from __future__ import annotations

from pathlib import Path

from data_recipes.config import ScoreConfig
from data_recipes.media import sample_frames
from data_recipes.records import ClipRecord
from data_recipes.scorers import Scorer


def score_clips(clips: list[ClipRecord], scorers: list[Scorer], output_dir: Path, cfg: ScoreConfig) -> None:
    """Set ``clip.scores[scorer.name]`` for every clip and scorer (in place); run after captioning so
    caption-aware scorers see ``clip.caption``."""
    for clip in clips:
        frames = sample_frames(output_dir / clip.clip_path, cfg.num_frames, clip.num_frames, cfg.short_side)
        frames.caption = clip.caption
        clip.scores.update({scorer.name: scorer(frames) for scorer in scorers})
