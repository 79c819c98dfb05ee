"""Synthetic precomputed samples (VAE latents + T5 states) with structure a DiT can learn.

Each of ``num_prompts`` prompts owns a fixed caption embedding and a clip: a smooth random latent
pattern that drifts one latent pixel per frame in a prompt-specific direction. A model that learns
the data must read the caption, so the loss of a debug run falls only if conditioning works.
Sample ``i`` is a pure function of ``(seed, i)``, which makes batches reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


class SyntheticLoader:
    """The trainer's loader contract over ``SyntheticLatents``, for debug runs without shards.

    Iterating yields ``{"latents", "text_states", "text_mask", "bucket"}`` batches; buckets take
    turns batch by batch, and rank ``r`` of ``w`` reads samples ``(k * w + r) * batch_size + i`` of
    batch ``k``, so ranks never share a sample. The position is one counter, global across ranks,
    so a restart on a different number of ranks continues where the run stopped.
    """

    def __init__(self, buckets: list[tuple[int, int, int]], grids: list[tuple[int, int, int]], channels: int,
                 text_len: int, caption_channels: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0):
        self.buckets, self.batch_size, self.rank, self.world_size = buckets, batch_size, rank, world_size
        self.sources = [SyntheticLatents(g, channels, text_len, caption_channels, seed=seed) for g in grids]
        self.batches = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        k = self.batches
        which = k % len(self.sources)
        batch = self.sources[which].batch((k * self.world_size + self.rank) * self.batch_size, self.batch_size)
        batch["bucket"] = self.buckets[which]
        self.batches += 1
        return batch

    def null_caption(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sources[0].null_caption()

    def state_dict(self) -> dict:
        return {"batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.batches = int(state["batches"])
