"""The loader's resumable position: one ``WorkerState`` per logical worker, plus derived seeds.

Nothing random in the loader keeps hidden state. Every draw is seeded by ``derive_seed`` from the
run seed and the coordinates of the draw (epoch, rank, worker, a counter or a sample key), so a
position is a handful of ints: which shard of the worker's epoch list it reads, how many samples
of that shard it has read, how many shuffle draws it has made, and *references* to the samples
sitting in its shuffle and bucket buffers. Restoring re-reads those samples rather than storing
their bytes, which keeps the state small enough for every checkpoint. See docs/data.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_VERSION = 1


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts``; stable across processes (unlike ``hash``) and Python versions."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def shards_digest(urls: list[str]) -> str:
    """Identifies the expanded shard list; references into it mean nothing under another list."""
    return hashlib.blake2b("\n".join(urls).encode(), digest_size=16).hexdigest()


@dataclass
class WorkerState:
    """Where one logical worker (rank r, worker w) stands, as of the last batch it handed out.

    A reference ``[url_index, member]`` names the ``member``-th sample of shard ``urls[url_index]``;
    bucket buffers also carry the epoch the sample was drawn in (its decode randomness depends on it).
    """

    epoch: int = 0
    shard_pos: int = 0  # index into this worker's shard list of ``epoch``
    member: int = 0  # samples already read from that shard
    picks: int = 0  # shuffle-buffer draws made in ``epoch``
    shuffle: list[list[int]] = field(default_factory=list)  # [url_index, member], buffer order
    buckets: list[list[list[int]]] = field(default_factory=list)  # per bucket: [epoch, url_index, member]
    image_batches: int = 0
    video_batches: int = 0
    mix_forced: int = 0  # batches of the kind data.image_fraction did not ask for, let out to avoid a stall
    accepted_in_epoch: int = 0  # samples that reached a bucket this epoch; 0 over a whole epoch is an error
    done: bool = False  # a finite loader (data.epochs) has run all its epochs
    counts: dict[str, int] = field(default_factory=dict)  # samples per bucket name
    rejects: dict[str, int] = field(default_factory=dict)  # skipped samples and shards, by reason

    def to_dict(self) -> dict:
        """Plain ints, lists and dicts: ``torch.save``-able and loadable with ``weights_only=True``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WorkerState":
        return cls(**{k: _copy(v) for k, v in d.items()})

    def reject(self, reason: str) -> None:
        self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def accept(self, bucket: str) -> None:
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.accepted_in_epoch += 1


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def sum_counts(tables: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for table in tables:
        for key, n in table.items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items()))
