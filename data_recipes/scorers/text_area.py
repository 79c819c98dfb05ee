"""Text area: the largest fraction of a sampled frame covered by detected text (0-1; the report's
limit is 0.05 %, i.e. 0.0005), for captions, subtitles, watermarks and logos burnt into the picture.

The report uses CRAFT. We run a DB text detector (Differentiable Binarization, the text detector
OpenCV ships post-processing for) through ``cv2.dnn.TextDetectionModel_DB``: OpenCV is already a
curation dependency, so this adds no runtime and no PyTorch model code, and the weights are one
local ``.onnx`` file (e.g. OpenCV's DB_TD500 / DB_IC15 ResNet models). The network maps a
[1, 3, H, W] BGR image to its [H, W] text probability map; OpenCV thresholds it, grows the shrunk
text kernels back (``unclip_ratio``) and returns one quadrilateral a text region. The regions are
filled into a mask, so overlapping boxes count once. The maximum over frames is kept: text shown in
a few of the samples (a title card, a passing subtitle) is enough to fail a clip.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_recipes.config import TextAreaConfig, local_path
from data_recipes.media import ClipFrames
from data_recipes.scorers.base import Scorer

STRIDE = 32  # DB's backbone downsamples by 32: the input size must be a multiple of it


class TextArea(Scorer):
    name = "text_area"

    def __init__(self, cfg: TextAreaConfig):
        path = local_path("score.text_area.model_path", cfg.model_path)
        try:
            self.model = cv2.dnn.TextDetectionModel_DB(str(path))
        except (cv2.error, SystemError) as err:  # OpenCV raises SystemError wrapping cv2.error here
            raise ValueError(f"score.text_area.model_path={cfg.model_path!r}: OpenCV cannot read this "
                             f"ONNX model ({err})") from err
        self.model.setBinaryThreshold(cfg.binary_threshold).setPolygonThreshold(cfg.polygon_threshold)
        self.model.setUnclipRatio(cfg.unclip_ratio).setMaxCandidates(cfg.max_candidates)
        self.mean = tuple(cfg.mean)
        self.input_size: tuple[int, int] | None = None

    def _fit_input(self, height: int, width: int) -> None:
        """Feed frames at their own size, rounded up to the stride (a resize OpenCV does for us)."""
        size = (-(-width // STRIDE) * STRIDE, -(-height // STRIDE) * STRIDE)
        if size != self.input_size:
            self.model.setInputParams(scale=1.0 / 255.0, size=size, mean=self.mean, swapRB=False)
            self.input_size = size

    def frame_area(self, rgb: np.ndarray) -> float:
        """Fraction of one uint8 RGB frame [H, W, 3] covered by detected text."""
        height, width = rgb.shape[:2]
        self._fit_input(height, width)
        boxes, _ = self.model.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if len(boxes) == 0:
            return 0.0
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [np.asarray(b, np.int32) for b in boxes], 1)
        return float(mask.mean())

    def score(self, clip: ClipFrames) -> float:
        return max(self.frame_area(frame) for frame in clip.frames)
