"""What a TI2V sample is conditioned on: given frames and their places in the clip.

``Condition.from_images(first, last)`` is image-to-video (and first + last frame interpolation),
``Condition.from_clip(frames, k)`` continues a clip from its last k frames. ``Sampler.sample(...,
condition=...)`` turns one into the DiT's extra input as the released TI2V pipeline does:

    video = zeros [3, T, H, W]; video[:, indices] = given frames (resized, centre-cropped, in [-1, 1])
    masked latents = VAE(video).sample() * scaling       # the frames to generate stay 0 (mid-grey)
    mask = condition_mask(generate)                      # 1 generate / 0 given, the released layout

and, as released, does not overwrite the given frames' latents during denoising: the model itself
learns to keep them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from allegro_train.data.decode import decode_image, resize_crop


@dataclass(frozen=True)
class Condition:
    frames: tuple[torch.Tensor, ...]  # uint8 [H, W, 3] each, any size: resized and centre-cropped to the sample's
    indices: tuple[int, ...]  # where each frame goes in the clip; negative counts from the end

    def __post_init__(self) -> None:
        for frame in self.frames:
            if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"condition frame {frame.dtype} {tuple(frame.shape)}: expected uint8 [H, W, 3]")
        if len(self.indices) != len(self.frames) or not self.indices:
            raise ValueError(f"{len(self.frames)} condition frames for indices {self.indices}")

    @classmethod
    def from_images(cls, first: np.ndarray | torch.Tensor, last: np.ndarray | torch.Tensor | None = None) -> "Condition":
        """The first frame (image-to-video), or the first and the last (interpolation); uint8 [H, W, 3]."""
        if last is None:
            return cls((torch.as_tensor(first),), (0,))
        return cls((torch.as_tensor(first), torch.as_tensor(last)), (0, -1))

    @classmethod
    def from_clip(cls, frames: np.ndarray | torch.Tensor, context_frames: int) -> "Condition":
        """Continue a clip: its last ``context_frames`` frames (uint8 [F, H, W, 3]) open the new one."""
        frames = torch.as_tensor(frames)
        if not 1 <= context_frames <= len(frames):
            raise ValueError(f"context_frames={context_frames}: the clip has {len(frames)} frames")
        return cls(tuple(frames[-context_frames:]), tuple(range(context_frames)))

    def pixels(self, num_frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip [3, T, H, W] in [-1, 1]: the given frames and zeros elsewhere; generate [T]: 0 given, 1 not)."""
        positions = [i % num_frames for i in self.indices]
        if any(not -num_frames <= i < num_frames for i in self.indices) or len(set(positions)) != len(positions):
            raise ValueError(f"condition indices {self.indices} do not fit a {num_frames}-frame clip")
        video = torch.zeros(3, num_frames, height, width)
        for position, frame in zip(positions, self.frames):
            video[:, position] = resize_crop(frame[None], height, width)[:, 0]  # [3, H, W]
        generate = torch.ones(num_frames)
        generate[positions] = 0
        return video, generate


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """uint8 [H, W, 3] of a PNG or JPEG."""
    return decode_image(Path(path).read_bytes(), str(path))[0]


def read_clip(path: str | os.PathLike) -> torch.Tensor:
    """uint8 [F, H, W, 3]: every frame of a video file (PyAV)."""
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return torch.from_numpy(np.stack(frames))


def sample_windows(sampler, prompt: str, condition: Condition, windows: int, context_frames: int, seed: int = 0,
                   **sample_kwargs) -> np.ndarray:
    """A clip longer than one window: ``windows`` windows of ``num_frames``, each after the first
    conditioned on the previous one's last ``context_frames`` frames (which it repeats, so those are
    dropped) -> uint8 [T + (windows - 1) (T - k), H, W, 3]. Window w draws from ``seed + w``."""
    num_frames = sample_kwargs.get("num_frames", 88)
    if windows > 1 and not 1 <= context_frames < num_frames:
        raise ValueError(f"context_frames={context_frames}: must be in [1, num_frames={num_frames}) to chain windows")
    video = sampler.sample([prompt], seed=seed, condition=condition, **sample_kwargs)[0]  # [T, H, W, 3]
    for window in range(1, windows):
        following = Condition.from_clip(video, context_frames)
        clip = sampler.sample([prompt], seed=seed + window, condition=following, **sample_kwargs)[0]
        video = np.concatenate([video, clip[context_frames:]])
    return video
