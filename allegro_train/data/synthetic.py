"""Synthetic precomputed samples (VAE latents + T5 states) with structure a DiT can learn.

Each of ``num_prompts`` prompts owns a fixed caption embedding and a clip: a smooth random latent
pattern that drifts one latent pixel per frame in a prompt-specific direction. A model that learns
the data must read the caption, so the loss of a debug run falls only if conditioning works.
Sample ``i`` is a pure function of ``(seed, i)``, which makes batches reproducible and resumable.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from allegro_train.data.buckets import latent_shape


class SyntheticLatents:
    def __init__(self, grid: tuple[int, int, int], channels: int, text_len: int, caption_channels: int,
                 num_prompts: int = 8, seed: int = 0):
        self.grid, self.channels, self.num_prompts, self.seed = grid, channels, num_prompts, seed
        g = torch.Generator().manual_seed(seed)
        t, h, w = grid
        coarse = torch.randn(num_prompts, channels, max(h // 2, 1), max(w // 2, 1), generator=g)
        self.patterns = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)  # [P, C, H, W]
        self.directions = torch.randint(0, 4, (num_prompts,), generator=g)  # right, left, down, up
        self.text_states = torch.randn(num_prompts, text_len, caption_channels, generator=g)  # [P, L, C_text]
        lengths = torch.randint(1, text_len + 1, (num_prompts,), generator=g)
        self.text_mask = (torch.arange(text_len)[None] < lengths[:, None]).long()  # [P, L], 1 keep
        self.text_states *= self.text_mask[..., None]

    def clip(self, prompt: int) -> torch.Tensor:
        """[C, T, H, W]: the prompt's pattern rolled one latent pixel per frame in its direction."""
        shift, dim = [(1, -1), (-1, -1), (1, -2), (-1, -2)][int(self.directions[prompt])]
        frames = [torch.roll(self.patterns[prompt], shifts=shift * i, dims=dim) for i in range(self.grid[0])]
        return torch.stack(frames, dim=1)

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        prompt = int(torch.randint(0, self.num_prompts, (1,), generator=g))
        latents = self.clip(prompt) + 0.05 * torch.randn(self.channels, *self.grid, generator=g)
        return {"latents": latents, "text_states": self.text_states[prompt], "text_mask": self.text_mask[prompt],
                "prompt": torch.tensor(prompt)}

    def batch(self, start: int, size: int) -> dict[str, torch.Tensor]:
        """Samples ``start .. start+size-1`` stacked along a new batch dim."""
        samples = [self.sample(start + i) for i in range(size)]
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}

    def null_caption(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty prompt's states [1, L, C_text] and mask [1, L] (one kept token, as T5's EOS)."""
        states = torch.zeros_like(self.text_states[:1])
        mask = torch.zeros_like(self.text_mask[:1])
        mask[:, 0] = 1
        return states, mask



def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_synthetic_shards(folder: str | os.PathLike, buckets: list[tuple[int, int, int]], caption_channels: int,
                           text_len: int, channels: int = 4, samples_per_bucket: int = 64, num_shards: int = 4,
                           latent_scaling_factor: float = 0.13, temporal: int = 4, spatial: int = 8,
                           seed: int = 0) -> tuple[str, str]:
    """Precomputed shards (docs/data_format.md) of ``SyntheticLatents`` clips, once per folder.

    Stored moments have a tiny variance and a mean divided by the scaling factor, so the loader's
    ``(mean + std * randn) * scaling_factor`` gives back the synthetic clip. Also writes the empty
    caption's states (``null.t5.npy``) for caption dropout. Returns (shard brace pattern, null path).
    A complete folder (``done`` marker) is reused; a half-written one is rebuilt.
    """
    import webdataset as wds

    folder = Path(folder)
    pattern = str(folder / f"synthetic-{{00000..{num_shards - 1:05d}}}.tar")
    null_path = folder / "null.t5.npy"
    if (folder / "done").is_file():
        return pattern, str(null_path)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sinks = [wds.TarWriter(str(folder / f"synthetic-{i:05d}.tar")) for i in range(num_shards)]
    written = 0
    for bucket in buckets:
        source = SyntheticLatents(latent_shape(*bucket, temporal, spatial), channels, text_len, caption_channels,
                                  seed=seed)
        for index in range(samples_per_bucket):
            sample = source.sample(index)
            mean = (sample["latents"] / latent_scaling_factor).numpy()
            logvar = np.full_like(mean, -30.0)  # std 3e-7: the draw is the clip itself
            kept = int(sample["text_mask"].sum())
            key = f"synthetic{bucket[0]}x{bucket[1]}x{bucket[2]}_{index:06d}"
            meta = {"caption": f"synthetic prompt {int(sample['prompt'])}", "bucket": list(bucket),
                    "num_frames": bucket[0], "height": bucket[1], "width": bucket[2]}
            sinks[written % num_shards].write({
                "__key__": key, "json": json.dumps(meta).encode(),
                "latent.npy": _npy(np.concatenate([mean, logvar]).astype(np.float16)),
                "t5.npy": _npy(sample["text_states"][:kept].numpy().astype(np.float16))})
            written += 1
    for sink in sinks:
        sink.close()
    null_states, null_mask = source.null_caption()
    np.save(null_path, null_states[0, : int(null_mask.sum())].numpy().astype(np.float16), allow_pickle=False)
    (folder / "done").write_text(f"{written} samples\n")
    return pattern, str(null_path)
