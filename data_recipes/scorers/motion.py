"""Mean optical-flow magnitude, pixels a frame at the scoring size (OpenCV Farneback).

Flow runs between each sampled frame and the frame right after it, so the value is per frame
step whatever the clip's length. Near 0 is a still image; very large is shake or a cut missed.
"""

import cv2
import numpy as np

from data_recipes.media import ClipFrames
from data_recipes.scorers.base import Scorer, luma


class Motion(Scorer):
    name = "motion"

    def score(self, clip: ClipFrames) -> float:
        magnitudes = []
        for a, b in zip(luma(clip.frames).astype(np.uint8), luma(clip.next_frames).astype(np.uint8)):
            flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=15,
                                                iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
            magnitudes.append(np.linalg.norm(flow, axis=-1).mean())
        return float(np.mean(magnitudes))
