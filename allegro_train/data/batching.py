"""Per-bucket buffers that become batches: a batch never mixes buckets, so it needs no padding.

A bucket's batch leaves as soon as it is full. With ``image_fraction`` set, the next batch's kind
(image or video) is the one furthest below its share; a full bucket of the other kind waits,
unless that kind has piled up ``_MIX_PATIENCE`` batches, so data without enough images can never
stall the loader (such batches are counted as ``mix_forced``).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch

from allegro_train.data.buckets import BucketTable

_MIX_PATIENCE = 4

Item = tuple[list[int], dict[str, Any]]  # ([epoch, url_index, member], prepared sample)


class BucketBatcher:
    def __init__(self, table: BucketTable, image_fraction: Optional[float], buffers: list[list[Item]],
                 image_batches: int = 0, video_batches: int = 0, mix_forced: int = 0):
        self.table, self.image_fraction, self.buffers = table, image_fraction, buffers
        self.image_batches, self.video_batches, self.mix_forced = image_batches, video_batches, mix_forced

    def add(self, index: int, ref: list[int], sample: dict[str, Any]) -> None:
        self.buffers[index].append((ref, sample))

    def pop_ready(self) -> Optional[tuple[int, list[Item]]]:
        """The next full batch as (bucket index, items), or None while none may leave."""
        ready = [i for i, buf in enumerate(self.buffers) if len(buf) >= self.table.batch_sizes[i]]
        if not ready:
            return None
        if self.image_fraction is not None:
            want_image = self._wants_image()
            wanted = [i for i in ready if self.table.buckets[i].is_image == want_image]
            if wanted:
                ready = wanted
            else:
                ready = [i for i in ready if len(self.buffers[i]) >= _MIX_PATIENCE * self.table.batch_sizes[i]]
                if not ready:
                    return None
                self.mix_forced += 1
        return self._take(ready[0], self.table.batch_sizes[ready[0]])

    def flush(self) -> Iterator[tuple[int, list[Item]]]:
        """Every remaining sample, in batches (the last of a bucket may be short): a finite loader's end."""
        for index in range(len(self.buffers)):
            while self.buffers[index]:
                yield self._take(index, self.table.batch_sizes[index])

    def refs(self) -> list[list[list[int]]]:
        return [[list(ref) for ref, _ in buf] for buf in self.buffers]

    def _wants_image(self) -> bool:
        p, total = self.image_fraction, self.image_batches + self.video_batches + 1
        return p * total - self.image_batches >= (1 - p) * total - self.video_batches

    def _take(self, index: int, size: int) -> tuple[int, list[Item]]:
        items, self.buffers[index] = self.buffers[index][:size], self.buffers[index][size:]
        if self.table.buckets[index].is_image:
            self.image_batches += 1
        else:
            self.video_batches += 1
        return index, items


def collate(items: list[Item], bucket: tuple[int, int, int], precomputed: bool) -> dict[str, Any]:
    """Stack one bucket's samples. Precomputed: ``latents`` [B, C, T', H', W'], ``text_states``
    [B, L, D] zero-padded to the longest caption, ``text_mask`` [B, L] long (1 keep). Online:
    ``video`` [B, 3, F, H, W] and ``captions``."""
    samples = [sample for _, sample in items]
    keys = [s["key"] for s in samples]
    if not precomputed:
        return {"video": torch.stack([s["video"] for s in samples]), "captions": [s["caption"] for s in samples],
                "keys": keys, "bucket": bucket}
    widths = {s["text_states"].shape[1] for s in samples}
    if len(widths) > 1:
        raise ValueError(f"T5 states of different widths {sorted(widths)} in one batch (keys {keys}): "
                         "the shards were precomputed with different text encoders")
    length = max(s["text_states"].shape[0] for s in samples)
    states = torch.zeros(len(samples), length, widths.pop())  # [B, L, D]
    mask = torch.zeros(len(samples), length, dtype=torch.long)  # [B, L]
    for i, s in enumerate(samples):
        n = s["text_states"].shape[0]
        states[i, :n], mask[i, :n] = s["text_states"], 1
    return {"latents": torch.stack([s["latents"] for s in samples]), "text_states": states, "text_mask": mask,
            "keys": keys, "bucket": bucket}
