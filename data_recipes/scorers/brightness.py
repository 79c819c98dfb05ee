"""Mean luma (0-255) over the sampled frames; the report keeps clips in [20, 180]."""

from data_recipes.media import ClipFrames
from data_recipes.scorers.base import Scorer, luma


class Brightness(Scorer):
    name = "brightness"

    def score(self, clip: ClipFrames) -> float:
        return float(luma(clip.frames).mean())
