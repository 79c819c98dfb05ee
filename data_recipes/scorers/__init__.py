"""Pluggable clip scorers, one catalog column each; ``build_scorers`` makes those a run names.

Pixel scorers (brightness, black_border, clarity, motion, frame_diff) need only OpenCV and numpy;
model scorers (aesthetic, clip_similarity, text_area) take local weight paths from ``score.<name>``. To add one, subclass ``Scorer`` in a
file of its own and register its factory in ``FACTORIES``.
"""

from __future__ import annotations

from typing import Callable

from data_recipes.config import ScoreConfig
from data_recipes.scorers.base import Scorer
from data_recipes.scorers.black_border import BlackBorder
from data_recipes.scorers.brightness import Brightness
from data_recipes.scorers.clarity import Clarity
from data_recipes.scorers.frame_diff import FrameDiff
from data_recipes.scorers.motion import Motion


def _aesthetic(cfg: ScoreConfig) -> Scorer:
    from data_recipes.scorers.aesthetic import Aesthetic  # torch and transformers only when asked for

    return Aesthetic(cfg.aesthetic)


def _clip_similarity(cfg: ScoreConfig) -> Scorer:
    from data_recipes.scorers.clip_similarity import ClipSimilarity  # torch and transformers only when asked for

    return ClipSimilarity(cfg.clip_similarity)


def _text_area(cfg: ScoreConfig) -> Scorer:
    from data_recipes.scorers.text_area import TextArea

    return TextArea(cfg.text_area)


FACTORIES: dict[str, Callable[[ScoreConfig], Scorer]] = {
    "brightness": lambda cfg: Brightness(),
    "black_border": lambda cfg: BlackBorder(),
    "clarity": lambda cfg: Clarity(),
    "motion": lambda cfg: Motion(),
    "frame_diff": lambda cfg: FrameDiff(),
    "aesthetic": _aesthetic,
    "clip_similarity": _clip_similarity,
    "text_area": _text_area,
}


def build_scorers(cfg: ScoreConfig) -> list[Scorer]:
    unknown = [n for n in cfg.scorers if n not in FACTORIES]
    if unknown:
        raise KeyError(f"score.scorers names unknown scorers {unknown}; known: {sorted(FACTORIES)}")
    return [FACTORIES[name](cfg) for name in cfg.scorers]


__all__ = ["FACTORIES", "Scorer", "build_scorers"]
