"""Sharpness as the variance of the Laplacian of each frame's luma, averaged over frames.

Blur removes the high frequencies the Laplacian responds to, so a blurred clip scores far lower
than the same clip sharp. The value depends on the scoring size (``score.short_side``); the
report's DOVER model measures clarity on another scale (see docs/curation.md).
"""

import cv2
import numpy as np

from data_recipes.media import ClipFrames
from data_recipes.scorers.base import Scorer, luma


class Clarity(Scorer):
    name = "clarity"

    def score(self, clip: ClipFrames) -> float:
        return float(np.mean([cv2.Laplacian(y, cv2.CV_32F).var() for y in luma(clip.frames)]))
