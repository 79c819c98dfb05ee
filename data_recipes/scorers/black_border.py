"""Fraction of the frame covered by black bars (letterbox and pillarbox), 0 to 1.

A row or column counts as bar when, averaged over the sampled frames, its brightest pixel stays
under ``BLACK_LEVEL``: averaging over time keeps a dark but moving scene from looking like a bar.
Only runs touching the frame's edges count, so dark objects inside the picture do not.
"""

import numpy as np

from data_recipes.media import ClipFrames
from data_recipes.scorers.base import Scorer, luma

BLACK_LEVEL = 24.0  # on 0-255; decoded video black is 0-16


def _edge_run(dark: np.ndarray) -> int:
    """Length of the run of True at the start of ``dark``."""
    return len(dark) if dark.all() else int(np.argmin(dark))


class BlackBorder(Scorer):
    name = "black_border"

    def score(self, clip: ClipFrames) -> float:
        mean = luma(clip.frames).mean(axis=0)  # [H, W]
        dark_rows, dark_cols = mean.max(axis=1) < BLACK_LEVEL, mean.max(axis=0) < BLACK_LEVEL
        height, width = mean.shape
        bar_rows = min(height, _edge_run(dark_rows) + _edge_run(dark_rows[::-1]))
        bar_cols = min(width, _edge_run(dark_cols) + _edge_run(dark_cols[::-1]))
        inner = (height - bar_rows) * (width - bar_cols)
        return 1.0 - inner / (height * width)
