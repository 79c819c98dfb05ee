"""The demo's raw videos: coloured shapes moving over textured backgrounds, some with hard cuts.

Every video shows one shape of one colour crossing the frame in one direction; its caption says
exactly that ("a red square moves right") and sits beside it as a sidecar ``.json``, which
``data_recipes`` reads. A "cut" video holds two scenes of the same motion over different
backgrounds (a camera cut), so the scene split has real work to do and the caption holds for both.

Backgrounds are low-saturation textures and the shapes are saturated, so the demo's detector
(``allegro_train.demo.detect``) can tell a shape's colour and path from a generated clip.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allegro_train.sampling.video import write_video

# Saturated RGB: far from every background texture and from each other.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 60, 240),
    "yellow": (240, 220, 30),
}
# Unit steps in (x, y) image coordinates: y grows downwards.
DIRECTIONS: dict[str, tuple[int, int]] = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}
SHAPES = ("square", "circle", "triangle")
# Colour x direction pairs never shown in training: the demo samples these to test that the model
# composes what it learned rather than recalling clips. A Latin square: each colour and each
# direction is held out exactly once, so each is still seen with three partners.
HELD_OUT: tuple[tuple[str, str], ...] = (("red", "up"), ("green", "left"), ("blue", "down"), ("yellow", "right"))


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moves {direction}"


@dataclass(frozen=True)
class VideoSpec:
    """One raw video; scene lengths in frames (two scenes make a hard cut)."""

    colour: str
    shape: str
    direction: str
    scenes: tuple[int, ...]
    seed: int

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.direction)


def training_combinations() -> list[tuple[str, str, str]]:
    """(colour, shape, direction) for every pair that is not held out."""
    return [(c, s, d) for c, s, d in itertools.product(COLOURS, SHAPES, DIRECTIONS) if (c, d) not in HELD_OUT]


def held_out_prompts() -> list[str]:
    return [caption(c, s, d) for (c, d), s in itertools.product(HELD_OUT, SHAPES)]


def plan_videos(count: int, scene_frames: int, cut_fraction: float, seed: int) -> list[VideoSpec]:
    """``count`` videos cycling through the training combinations (balanced), ``cut_fraction`` of them cut."""
    rng = random.Random(seed)
    combos = training_combinations()
    rng.shuffle(combos)
    specs = []
    for i in range(count):
        colour, shape, direction = combos[i % len(combos)]
        scenes = (scene_frames, scene_frames) if rng.random() < cut_fraction else (scene_frames,)
        specs.append(VideoSpec(colour, shape, direction, scenes, seed * 100_003 + i))
    return specs


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth grey texture with a faint tint, float [H, W, 3] in 0..255 (saturation stays low).

    Low-frequency on purpose: blotches a quarter of the frame wide, which survive the VAE's 8x8
    compression as structure rather than as noise the DiT would have to model.
    """
    from PIL import Image

    coarse = rng.uniform(0, 1, (5, 5)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
    fine = rng.uniform(-1, 1, (size, size))
    level = rng.uniform(60, 170)  # scenes differ in brightness, so a cut is a clear content change
    grey = level + 70 * (smooth - 0.5) + 6 * fine
    tint = rng.uniform(-12, 12, 3)
    return np.clip(grey[..., None] + tint, 0, 255)


def shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Boolean [H, W]: pixels inside ``shape`` centred at (cx, cy)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "triangle":  # apex up; its width grows towards the base
        return (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def render(spec: VideoSpec, size: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: each scene a fresh background, the shape crossing it along its direction."""
    rng = np.random.default_rng(spec.seed)
    radius = size * rng.uniform(0.12, 0.16)
    colour = np.array(COLOURS[spec.colour], dtype=np.float64)
    step_x, step_y = DIRECTIONS[spec.direction]
    frames = []
    for length in spec.scenes:
        background = texture(rng, size)
        margin = radius + 1
        travel = size - 2 * margin
        # Along the motion axis the shape crosses the whole frame; across it, it stays near the middle.
        # The path is then set by the direction alone, so the caption's direction word is what tells a
        # denoiser where the shape is at high noise: a random offset would let it shrug direction off.
        across = size / 2 + rng.uniform(-0.1, 0.1) * size
        for i in range(length):
            along = margin + travel * i / max(length - 1, 1)
            if step_x:
                cx, cy = (along if step_x > 0 else size - along), across
            else:
                cx, cy = across, (along if step_y > 0 else size - along)
            frame = background.copy()
            frame[shape_mask(spec.shape, size, cx, cy, radius)] = colour
            frames.append(frame)
    return np.stack(frames).round().astype(np.uint8)


def write_videos(folder: Path, specs: list[VideoSpec], size: int, fps: int) -> list[Path]:
    """``folder/video_NNNN.mp4`` with a sidecar ``.json`` caption each; returns the video paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(specs):
        path = folder / f"video_{i:04d}.mp4"
        write_video(render(spec, size), path, fps)
        path.with_suffix(".json").write_text(json.dumps({"caption": spec.caption}))
        paths.append(path)
    return paths
