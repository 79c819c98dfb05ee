"""One logical worker's pipeline: its shards -> shuffle buffer -> prepare -> bucket buffers -> batches.

Each batch leaves with a snapshot of the worker's ``WorkerState`` taken right after it was cut,
so the main process can save exactly the position of the batches the trainer consumed (workers
run ahead by their prefetch). A worker rebuilt from a snapshot re-reads the samples its buffers
referenced and continues as if never stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from allegro_train.data.batching import BucketBatcher, Item, collate
from allegro_train.data.decode import BadSample
from allegro_train.data.samples import SampleSpec, prepare
from allegro_train.data.shards import ShuffleBuffer, epoch_shards, fetch_samples, read_shard
from allegro_train.data.state import WorkerState

log = logging.getLogger(__name__)

_LOGGED_PER_REASON = 3  # full messages per reject reason and worker; the rest only count


@dataclass(frozen=True)
class StreamSpec:
    urls: list[str]
    sample: SampleSpec
    shuffle_buffer: int
    shard_retries: int
    epochs: Optional[int]  # None: endless
    image_fraction: Optional[float]
    rank: int
    world_size: int
    workers: int  # logical workers per rank (max(data.num_workers, 1))


class WorkerStream:
    def __init__(self, spec: StreamSpec, worker: int, state: WorkerState):
        self.spec, self.state = spec, state
        self.slot, self.num_slots = spec.rank * spec.workers + worker, spec.world_size * spec.workers
        self.name = f"rank {spec.rank} worker {worker}"
        if state.buckets and len(state.buckets) != len(spec.sample.table):
            raise ValueError(f"loader state holds {len(state.buckets)} bucket buffers but data.buckets has "
                             f"{len(spec.sample.table)}: the bucket table changed since the state was saved")

    def __iter__(self) -> Iterator[tuple[Optional[dict[str, Any]], dict]]:
        """(batch, state snapshot) pairs until the last epoch (forever when ``epochs`` is None); a
        finite stream ends with (None, final snapshot)."""
        st, spec = self.state, self.spec
        if st.done:
            return
        self.shuffle, self.batcher = self._restore()
        yield from self._emit_ready()
        while True:
            shards = epoch_shards(len(spec.urls), spec.sample.seed, st.epoch, self.slot, self.num_slots)
            while st.shard_pos < len(shards):
                url_index = shards[st.shard_pos]
                for member, raw in read_shard(spec.urls[url_index], st.member, spec.shard_retries, self._shard_failed):
                    st.member = member + 1
                    out = self.shuffle.add((url_index, member), raw)
                    if out is not None:
                        yield from self._place(*out)
                st.shard_pos, st.member = st.shard_pos + 1, 0
            for out in self.shuffle.drain():
                yield from self._place(*out)
            self._end_epoch(shards)
            if spec.epochs is not None and st.epoch + 1 >= spec.epochs:
                for index, items in self.batcher.flush():  # lazily: each snapshot holds what is still buffered
                    yield self._batch(index, items)
                st.done = True
                yield None, self._snapshot()  # no batch: the final counts and position reach the main process
                return
            st.epoch, st.shard_pos, st.member, st.picks, st.accepted_in_epoch = st.epoch + 1, 0, 0, 0, 0
            self.shuffle = ShuffleBuffer(spec.shuffle_buffer, spec.sample.seed, st.epoch, self.slot)

    # ------------------------------------------------------------------------------ internals

    def _restore(self) -> tuple[ShuffleBuffer, BucketBatcher]:
        """Rebuild the shuffle and bucket buffers from the references in the state (empty when fresh)."""
        st, spec = self.state, self.spec
        bucket_refs = st.buckets or [[] for _ in range(len(spec.sample.table))]
        wanted = [tuple(r) for r in st.shuffle] + [(u, m) for buf in bucket_refs for _, u, m in buf]
        found = fetch_samples(spec.urls, wanted, spec.shard_retries, self._shard_failed) if wanted else {}
        shuffled = []
        for url_index, member in st.shuffle:
            if (url_index, member) in found:
                shuffled.append(((url_index, member), found[(url_index, member)]))
            else:
                st.reject("lost_on_resume")
        buffers: list[list[Item]] = [[] for _ in bucket_refs]
        for index, buf in enumerate(bucket_refs):
            for epoch, url_index, member in buf:
                raw = found.get((url_index, member))
                try:
                    if raw is None:
                        raise BadSample("lost_on_resume", f"{spec.urls[url_index]} #{member} could not be read again")
                    _, sample = prepare(raw, epoch, spec.sample)
                except BadSample as bad:
                    self._reject(bad)
                    continue
                buffers[index].append(([epoch, url_index, member], sample))
        shuffle = ShuffleBuffer(spec.shuffle_buffer, spec.sample.seed, st.epoch, self.slot, st.picks, shuffled)
        batcher = BucketBatcher(spec.sample.table, spec.image_fraction, buffers, st.image_batches,
                                st.video_batches, st.mix_forced)
        return shuffle, batcher

    def _place(self, ref: tuple[int, int], raw: dict) -> Iterator[tuple[dict[str, Any], dict]]:
        try:
            index, sample = prepare(raw, self.state.epoch, self.spec.sample)
        except BadSample as bad:
            self._reject(bad)
            return
        self.state.accept(self.spec.sample.table.buckets[index].name)
        self.batcher.add(index, [self.state.epoch, *ref], sample)
        yield from self._emit_ready()

    def _emit_ready(self) -> Iterator[tuple[dict[str, Any], dict]]:
        while (ready := self.batcher.pop_ready()) is not None:
            yield self._batch(*ready)

    def _batch(self, index: int, items: list[Item]) -> tuple[dict[str, Any], dict]:
        bucket = self.spec.sample.table.buckets[index].as_tuple()
        return collate(items, bucket, self.spec.sample.precomputed), self._snapshot()

    def _snapshot(self) -> dict:
        st = self.state
        st.picks, st.shuffle, st.buckets = self.shuffle.picks, self.shuffle.refs(), self.batcher.refs()
        st.image_batches, st.video_batches = self.batcher.image_batches, self.batcher.video_batches
        st.mix_forced = self.batcher.mix_forced
        return st.to_dict()

    def _reject(self, bad: BadSample) -> None:
        self.state.reject(bad.reason)
        if self.state.rejects[bad.reason] <= _LOGGED_PER_REASON:
            log.warning("%s skips a sample (%s)", self.name, bad)

    def _shard_failed(self, url: str, error: Exception) -> None:
        self.state.reject("shard_unreadable")

    def _end_epoch(self, shards: list[int]) -> None:
        st = self.state
        log.info("%s finished epoch %d: samples per bucket %s, skipped %s", self.name, st.epoch, st.counts, st.rejects)
        if st.accepted_in_epoch == 0:
            urls = [self.spec.urls[i] for i in shards]
            raise RuntimeError(f"{self.name}: epoch {st.epoch} of shards {urls[:5]}{'...' if len(urls) > 5 else ''} "
                               f"gave no usable sample; skipped by reason: {st.rejects}")
