"""The bucket table: which (frames, height, width) a sample trains at, and how many share a batch.

A sample goes to the best bucket it can fill without being enlarged more than ``max_upscale``:
first the closest aspect ratio (least cropped away), then the most frames, then the most pixels.
Images (1 frame) only go to image buckets and clips only to video buckets, so joint image + video
training is a table holding both kinds. A sample no bucket fits is rejected with a reason that the
loader counts; nothing is dropped silently. Pure Python so the config schema can import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

# Aspect ratios within ~10% (in log space) tie, so 368x640 (1.739) and 720x1280 (1.778) rank on
# frames and size rather than on a 2% difference in crop.
_ASPECT_TOLERANCE = 0.1


def latent_shape(frames: int, height: int, width: int, temporal: int = 4, spatial: int = 8) -> tuple[int, int, int]:
    """Pixel clip size -> latent grid (T', H', W'); an image (1 frame) stays 1 latent frame."""
    return (1 if frames == 1 else frames // temporal, height // spatial, width // spatial)


@dataclass(frozen=True)
class Bucket:
    frames: int
    height: int
    width: int

    @property
    def is_image(self) -> bool:
        return self.frames == 1

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)


class BucketTable:
    """Buckets in config order, with per-bucket batch sizes.

    ``batch_size`` is used for every bucket unless ``token_budget`` (latent positions T' x H' x W'
    per batch) is set: then small buckets get large batches and each step costs about the same.
    """

    def __init__(self, buckets: Sequence[tuple[int, int, int]], *, batch_size: int, token_budget: Optional[int],
                 max_upscale: float, temporal: int, spatial: int):
        self.buckets = [Bucket(*map(int, b)) for b in buckets]
        if len(set(self.buckets)) != len(self.buckets):
            raise ValueError(f"data.buckets lists a bucket twice: {[b.name for b in self.buckets]}")
        self.max_upscale, self.temporal, self.spatial = max_upscale, temporal, spatial
        self.latent_shapes = [latent_shape(*b.as_tuple(), temporal, spatial) for b in self.buckets]
        if token_budget is None:
            self.batch_sizes = [batch_size] * len(self.buckets)
        else:
            self.batch_sizes = [token_budget // math.prod(shape) for shape in self.latent_shapes]
            small = [b.name for b, n in zip(self.buckets, self.batch_sizes) if n < 1]
            if small:
                raise ValueError(f"data.token_budget={token_budget} holds no sample of bucket(s) {small}")

    def __len__(self) -> int:
        return len(self.buckets)

    def index(self, frames: int, height: int, width: int) -> Optional[int]:
        """The position of an exact bucket (precomputed samples name theirs), or None."""
        try:
            return self.buckets.index(Bucket(frames, height, width))
        except ValueError:
            return None

    def assign(self, frames: int, height: int, width: int, is_image: bool) -> tuple[Optional[int], str]:
        """(bucket index, "") for a sample with ``frames`` usable frames at height x width, else (None, reason).

        Reasons: ``no_image_bucket`` / ``no_video_bucket`` (the table lacks the kind),
        ``too_short`` (fewer frames than every video bucket), ``too_small`` (every bucket with
        enough frames would enlarge it past max_upscale).
        """
        kind = [i for i, b in enumerate(self.buckets) if b.is_image == is_image]
        if not kind:
            return None, "no_image_bucket" if is_image else "no_video_bucket"
        long_enough = [i for i in kind if self.buckets[i].frames <= frames]
        if not long_enough:
            return None, "too_short"
        fits = [i for i in long_enough if self.upscale(i, height, width) <= self.max_upscale]
        if not fits:
            return None, "too_small"
        aspect = math.log(width / height)

        def rank(i: int) -> tuple[int, int, int]:
            b = self.buckets[i]
            crop = round(abs(math.log(b.width / b.height) - aspect) / _ASPECT_TOLERANCE)
            return (crop, -b.frames, -b.height * b.width)

        return min(fits, key=rank), ""

    def upscale(self, i: int, height: int, width: int) -> float:
        """The factor a height x width frame is enlarged by to cover bucket ``i`` (then centre-cropped)."""
        b = self.buckets[i]
        return max(b.height / height, b.width / width)
