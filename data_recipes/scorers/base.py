"""The scorer interface: one object per catalog column, called on a clip's sampled frames."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, Optional

import numpy as np

from data_recipes.media import ClipFrames


class Scorer(ABC):
    """Scores a clip with one number, stored in the catalog column ``name``.

    Build once per worker process (model scorers load weights in ``__init__``) and call per clip.
    """

    name: ClassVar[str]

    @abstractmethod
    def score(self, clip: ClipFrames) -> Optional[float]:
        """The clip's value; None where the clip lacks what the scorer needs (clip_similarity on an
        uncaptioned clip): a NULL in the catalog, which every selection condition counts as a fail."""

    def __call__(self, clip: ClipFrames) -> Optional[float]:
        value = self.score(clip)
        if value is None:
            return None
        value = float(value)
        if not math.isfinite(value):  # NaN would pass no SQL filter and break the JSON metadata
            raise ValueError(f"scorer {self.name!r} returned {value}")
        return value


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0-255 scale: float32 [..., H, W] from uint8 [..., H, W, 3]."""
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
