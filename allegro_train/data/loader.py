"""``build_loader``: the trainer's iterable of bucketed batches, with an exact ``state_dict``.

Each rank runs ``W = max(num_workers, 1)`` logical workers; logical worker ``w`` of rank ``r``
reads the shards of slot ``r * W + w`` (see ``shards.epoch_shards``). torch's DataLoader asks its
worker processes for batches round-robin and hands them out in that order, so batch ``k`` after a
(re)start comes from process ``k % W``. The loader records which logical worker is due next and,
on resume, rotates the mapping (process ``j`` plays logical worker ``(j + next) % W``), so the
interleaving continues exactly where it stopped. docs/data.md covers what a restart on another
layout replays.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Optional

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from allegro_train.config.schema import DecodeBackend
from allegro_train.data.buckets import BucketTable
from allegro_train.data.decode import check_backend
from allegro_train.data.samples import SampleSpec
from allegro_train.data.shards import expand_shards
from allegro_train.data.state import FORMAT_VERSION, WorkerState, shards_digest, sum_counts
from allegro_train.data.stream import StreamSpec, WorkerStream

log = logging.getLogger(__name__)


def build_loader(data_cfg: Any, *, rank: int = 0, world_size: int = 1, seed: int = 0) -> "ShardLoader":
    """The loader of one data-parallel rank over ``data_cfg.shards`` (a ``DataConfig`` or its DictConfig node).

    Precomputed batches: ``latents`` float32 [B, 4, T', H', W'] (sampled, x latent_scaling_factor),
    ``text_states`` float32 [B, L, D] and ``text_mask`` long [B, L], padded to the batch's longest
    caption; online batches: ``video`` float32 [B, 3, F, H, W] in [-1, 1] and ``captions``. Both
    carry ``keys`` (list[str]) and ``bucket`` (frames, height, width).
    """
    if not data_cfg.shards:
        raise ValueError("data.shards is empty: build_loader streams shards; debug runs without shards use "
                         "allegro_train.data.SyntheticLatents")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is not in [0, world_size={world_size})")
    urls = expand_shards(data_cfg.shards)
    workers = max(data_cfg.num_workers, 1)
    if len(urls) < world_size * workers:  # a slot without shards would end its epochs with nothing
        raise ValueError(f"data.shards: {len(urls)} shard(s) cannot feed {world_size} rank(s) x {workers} worker(s) "
                         f"without idle readers; write more, smaller shards or lower data.num_workers")
    backend = DecodeBackend(data_cfg.decode_backend)
    if not data_cfg.precomputed:
        check_backend(backend)
    table = BucketTable([(b.frames, b.height, b.width) for b in data_cfg.buckets], batch_size=data_cfg.batch_size,
                        token_budget=data_cfg.token_budget, max_upscale=data_cfg.max_upscale,
                        temporal=data_cfg.vae_temporal_compression, spatial=data_cfg.vae_spatial_compression)
    sample = SampleSpec(table=table, precomputed=data_cfg.precomputed, text_len=data_cfg.text_len,
                        latent_scaling_factor=data_cfg.latent_scaling_factor, backend=backend,
                        frame_stride=data_cfg.frame_stride, target_fps=data_cfg.target_fps, seed=seed)
    spec = StreamSpec(urls=urls, sample=sample, shuffle_buffer=data_cfg.shuffle_buffer,
                      shard_retries=data_cfg.shard_retries, epochs=data_cfg.epochs,
                      image_fraction=data_cfg.image_fraction, rank=rank, world_size=world_size, workers=workers)
    return ShardLoader(spec, num_workers=data_cfg.num_workers)


class _Workers(IterableDataset):
    """What each DataLoader process runs: its logical worker's stream, tagged with the worker's id."""

    def __init__(self, spec: StreamSpec, states: list[dict], offset: int):
        self.spec, self.states, self.offset = spec, states, offset

    def __iter__(self) -> Iterator[tuple[int, dict, Optional[dict[str, Any]]]]:
        info = get_worker_info()
        worker = ((info.id if info else 0) + self.offset) % self.spec.workers
        for batch, state in WorkerStream(self.spec, worker, WorkerState.from_dict(self.states[worker])):
            yield worker, state, batch


def _as_is(item: Any) -> Any:
    return item  # the workers already batch; keep their tensors, lists and tuples untouched


class ShardLoader:
    """Iterate for batches; ``state_dict`` describes the position after the last batch handed out."""

    def __init__(self, spec: StreamSpec, num_workers: int):
        self.spec, self.num_workers = spec, num_workers
        self.states = [WorkerState() for _ in range(spec.workers)]
        self.next_worker = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dataset = _Workers(self.spec, [s.to_dict() for s in self.states], self.next_worker)
        if self.num_workers == 0:
            source: Any = dataset
        else:
            source = DataLoader(dataset, batch_size=None, num_workers=self.num_workers, collate_fn=_as_is,
                                prefetch_factor=2)
        for worker, state, batch in source:
            self.states[worker] = WorkerState.from_dict(state)
            self.next_worker = (worker + 1) % self.spec.workers
            if batch is not None:  # None: a finite worker's last word, its final counts
                yield batch

    def state_dict(self) -> dict[str, Any]:
        """Plain ints, strings, lists and dicts (``torch.save`` + ``weights_only=True`` load)."""
        spec = self.spec
        return {"format": FORMAT_VERSION, "seed": spec.sample.seed, "rank": spec.rank, "world_size": spec.world_size,
                "workers": spec.workers, "shards": shards_digest(spec.urls), "next_worker": self.next_worker,
                "worker_states": [s.to_dict() for s in self.states]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; on another ranks x workers layout, restart its epoch (docs/data.md)."""
        spec = self.spec
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(f"loader state format {state.get('format')!r}, this loader reads {FORMAT_VERSION}")
        if state["shards"] != shards_digest(spec.urls):
            raise ValueError("loader state was saved over another data.shards list (its digest differs): "
                             "positions in it do not apply to these shards")
        if state["seed"] != spec.sample.seed:
            raise ValueError(f"loader state was saved with seed={state['seed']}, this loader has seed={spec.sample.seed}")
        saved = [WorkerState.from_dict(s) for s in state["worker_states"]]
        if (state["world_size"], state["workers"]) == (spec.world_size, spec.workers):
            if state["rank"] != spec.rank:
                raise ValueError(f"loader state of rank {state['rank']} given to rank {spec.rank}: each rank "
                                 "restores its own (the layout is unchanged)")
            self.states, self.next_worker = saved, state["next_worker"]
            return
        epoch = min(s.epoch for s in saved)
        log.warning("loader state from %d rank(s) x %d worker(s) restored on %d x %d: epoch %d restarts from "
                    "its first sample with the new split (its samples already trained on are seen again)",
                    state["world_size"], state["workers"], spec.world_size, spec.workers, epoch)
        self.states = [WorkerState(epoch=epoch) for _ in range(spec.workers)]
        self.next_worker = 0

    def stats(self) -> dict[str, Any]:
        """Samples per bucket and skipped samples/shards by reason over this rank's workers (for logging)."""
        return {"epoch": min(s.epoch for s in self.states),
                "buckets": sum_counts([s.counts for s in self.states]),
                "rejects": sum_counts([s.rejects for s in self.states]),
                "mix_forced": sum(s.mix_forced for s in self.states)}
