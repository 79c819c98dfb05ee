"""A plain detector of the demo's prompts: which colour the moving shape has and where it goes.

No learned model: saturated pixels (the backgrounds are near-grey) close to a palette colour are
assigned to it; the clip's colour is the one with the most pixels over all frames, and its
direction is the dominant axis of the slope of that colour's centroid over time. A clip in which
the shape does not move far enough, or shows no saturated pixels, gets ``None``, which never
counts as right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from allegro_train.demo.videos import COLOURS, DIRECTIONS

MIN_CHROMA = 70  # max(rgb) - min(rgb) of a shape pixel; the textures stay far below it
MAX_DISTANCE = 100  # RGB distance of a shape pixel to its palette colour (washed-out noise is not a shape)
MIN_PIXELS = 4  # per frame, for a centroid
MIN_TRAVEL = 0.15  # of the frame size, over the clip, to call a direction


@dataclass(frozen=True)
class Detection:
    colour: Optional[str]
    direction: Optional[str]
    travel: float  # centroid displacement over the clip, in frame sizes


def parse_prompt(prompt: str) -> tuple[str, str]:
    """(colour, direction) of "a <colour> <shape> moves <direction>"."""
    words = prompt.split()
    colour = next((w for w in words if w in COLOURS), None)
    direction = next((w for w in words if w in DIRECTIONS), None)
    if colour is None or direction is None:
        raise ValueError(f"prompt {prompt!r} names no demo colour {sorted(COLOURS)} or direction {sorted(DIRECTIONS)}")
    return colour, direction


def detect(frames: np.ndarray) -> Detection:
    """``frames`` uint8 [T, H, W, 3] -> the moving shape's colour and direction."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames of shape {frames.shape}: expected [T, H, W, 3]")
    pixels = frames.astype(np.float32)
    chroma = pixels.max(-1) - pixels.min(-1)  # [T, H, W]
    palette = np.array(list(COLOURS.values()), dtype=np.float32)  # [K, 3]
    distances = np.linalg.norm(pixels[..., None, :] - palette, axis=-1)  # [T, H, W, K]
    nearest = distances.argmin(-1)  # [T, H, W]
    shape_pixels = (chroma >= MIN_CHROMA) & (distances.min(-1) <= MAX_DISTANCE)
    counts = np.bincount(nearest[shape_pixels], minlength=len(palette))
    if counts.sum() == 0:
        return Detection(None, None, 0.0)
    k = int(counts.argmax())
    colour = list(COLOURS)[k]

    size = max(frames.shape[1:3])
    ts, xs, ys = [], [], []
    for t in range(frames.shape[0]):
        y, x = np.nonzero(shape_pixels[t] & (nearest[t] == k))
        if len(x) >= MIN_PIXELS:
            ts.append(t)
            xs.append(x.mean())
            ys.append(y.mean())
    if len(ts) < 2:
        return Detection(colour, None, 0.0)
    # Least-squares slope of each coordinate over time, times the clip's span: robust to a few
    # frames where the shape blurs out, unlike first-minus-last.
    span = ts[-1] - ts[0]
    dx = np.polyfit(ts, xs, 1)[0] * span / size
    dy = np.polyfit(ts, ys, 1)[0] * span / size
    travel = float(max(abs(dx), abs(dy)))
    if travel < MIN_TRAVEL:
        return Detection(colour, None, travel)
    if abs(dx) >= abs(dy):
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"
    return Detection(colour, direction, travel)
