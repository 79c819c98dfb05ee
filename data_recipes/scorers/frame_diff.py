"""Mean absolute luma difference (0-255) between successive sampled frames.

The samples span the clip, so this measures change over the whole clip: near 0 for a still
image or a slideshow frame held for seconds, which per-step motion can miss. The report uses
LPIPS between frames for the same purpose.
"""

import numpy as np

from data_recipes.media import ClipFrames
from data_recipes.scorers.base import Scorer, luma


class FrameDiff(Scorer):
    name = "frame_diff"

    def score(self, clip: ClipFrames) -> float:
        y = luma(clip.frames)
        if len(y) < 2:  # a clip too short for two distinct samples: compare against the next frame
            return float(np.abs(luma(clip.next_frames) - y).mean())
        return float(np.abs(np.diff(y, axis=0)).mean())
