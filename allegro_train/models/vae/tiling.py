"""Tiled encode/decode for any clip size: overlapping tiles, linear crossfades, full coverage.

Tiles are planned on the *latent* grid, so an encoder tile and the decoder tile of its latents
cover the same voxels; in pixels they are the latent extents times the compression (4, 8, 8).
Along each axis tiles advance by ``tile - overlap``; the last one is pulled back to end exactly at
the clip's edge (never padded, never dropped), so every voxel is covered whatever the size. The
reference (diffusers) instead stops at ``floor((N - tile) / stride) + 1`` tiles and leaves zeros
when that does not divide, e.g. at H = 368.

Blending is separable: along each axis a tile's weight ramps linearly across its *actual*
overlap with each neighbour (strictly positive, so no voxel gets zero weight), and the weights of
all tiles are normalised to sum to 1 at every position. The tiles form a grid, so the product of
three per-axis partitions of unity is a partition of unity in 3D: no weight volume is needed.

Peak memory: the network only ever sees one tile (times the batch); besides that, only the
output buffer of the clip's size is held (the caller's input and result).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import torch

AXES = ("frames", "height", "width")


@dataclass(frozen=True)
class TilingConfig:
    """Tile and overlap in *pixels* (frames, height, width); each a multiple of the compression.

    The defaults are the released pipeline's: tiles of 24 x 320 x 320 overlapping by 8 x 120 x 80
    (latent tiles 6 x 40 x 40); 88 x 720 x 1280 then takes 5 x 3 x 5 = 75 tiles, as in diffusers.
    """

    tile: tuple[int, int, int] = (24, 320, 320)
    overlap: tuple[int, int, int] = (8, 120, 80)

    def validate(self, compression: tuple[int, int, int]) -> None:
        if len(self.tile) != 3 or len(self.overlap) != 3:
            raise ValueError(f"tile={self.tile}, overlap={self.overlap}: give (frames, height, width)")
        for axis, tile, overlap, factor in zip(AXES, self.tile, self.overlap, compression):
            if tile <= 0 or tile % factor:
                raise ValueError(f"tile {axis}={tile} must be a positive multiple of {factor} (the VAE's compression)")
            if overlap < 0 or overlap % factor or overlap >= tile:
                raise ValueError(f"overlap {axis}={overlap} must be a multiple of {factor} in [0, tile {axis}={tile})")

    def in_latents(self, compression: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(tile, overlap) in latent voxels."""
        self.validate(compression)
        return (tuple(t // f for t, f in zip(self.tile, compression)),
                tuple(o // f for o, f in zip(self.overlap, compression)))


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles covering ``[0, length)``; a clip shorter than a tile is one tile."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = -(-(length - tile) // stride) + 1  # ceil: the last tile reaches the end
    return [min(i * stride, length - tile) for i in range(count)]


def axis_weights(starts: list[int], size: int, length: int) -> list[torch.Tensor]:
    """Per-tile blend weights [size] (float64) along one axis; they sum to 1 at every position."""
    spans = [(s, s + size) for s in starts]
    weights = []
    for i, (a, b) in enumerate(spans):
        w = torch.ones(size, dtype=torch.float64)
        if i > 0 and (n := spans[i - 1][1] - a) > 0:  # fade in across the overlap with the previous tile
            w[:n] *= torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
        if i < len(spans) - 1 and (n := b - spans[i + 1][0]) > 0:  # fade out into the next
            w[size - n:] *= torch.arange(n, 0, -1, dtype=torch.float64) / (n + 1)
        weights.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (a, b), w in zip(spans, weights):
        total[a:b] += w
    if not bool((total > 0).all()):  # cannot happen with the starts above; guard the invariant
        raise AssertionError(f"tiles {spans} leave part of [0, {length}) uncovered")
    return [w / total[a:b] for (a, b), w in zip(spans, weights)]


def tile_count(grid: tuple[int, int, int], config: TilingConfig, compression: tuple[int, int, int]) -> int:
    tile, overlap = config.in_latents(compression)
    count = 1
    for n, t, o in zip(grid, tile, overlap):
        count *= len(axis_starts(n, t, o))
    return count


def _tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid: tuple[int, int, int],
           in_scale: tuple[int, ...], out_scale: tuple[int, ...], config: TilingConfig,
           compression: tuple[int, int, int]) -> torch.Tensor:
    """Run ``fn`` tile by tile over ``x`` and blend. ``grid`` is the latent (T, H, W); a latent voxel
    is ``in_scale`` voxels of ``x`` and ``out_scale`` voxels of the output."""
    tile, overlap = config.in_latents(compression)
    plans = []  # per axis: [(input slice, output slice, weights [size*out])]
    for n, t, o, si, so in zip(grid, tile, overlap, in_scale, out_scale):
        starts, size = axis_starts(n, t, o), min(t, n)
        weights = axis_weights([s * so for s in starts], size * so, n * so)
        plans.append([(slice(s * si, (s + size) * si), slice(s * so, (s + size) * so), w)
                      for s, w in zip(starts, weights)])

    out = None
    for (ti, to, wt), (hi, ho, wh), (wi, wo, ww) in itertools.product(*plans):
        y = fn(x[:, :, ti, hi, wi])  # [B, C_out, t*out, h*out, w*out]
        if out is None:
            # Accumulate in at least fp32 so bf16 tiles do not lose the blend's precision.
            dtype = torch.promote_types(y.dtype, torch.float32)
            out = y.new_zeros(*y.shape[:2], *(n * s for n, s in zip(grid, out_scale)), dtype=dtype)
        weight = (wt[:, None, None] * wh[:, None] * ww).to(out.device, out.dtype)
        out[:, :, to, ho, wo] += y * weight
    return out.to(y.dtype)


def tiled_encode(encode: Callable[[torch.Tensor], torch.Tensor], video: torch.Tensor, config: TilingConfig,
                 compression: tuple[int, int, int]) -> torch.Tensor:
    """video [B, C, T, H, W] -> ``encode`` per pixel tile, blended -> [B, C_lat, T/ct, H/cs, W/cs]."""
    grid = tuple(n // f for n, f in zip(video.shape[2:], compression))
    return _tiled(encode, video, grid, compression, (1, 1, 1), config, compression)


def tiled_decode(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, config: TilingConfig,
                 compression: tuple[int, int, int]) -> torch.Tensor:
    """z [B, C_lat, T', H', W'] -> ``decode`` per latent tile, blended -> [B, C, T'*ct, H'*cs, W'*cs]."""
    return _tiled(decode, z, tuple(z.shape[2:]), (1, 1, 1), compression, config, compression)
