"""Shard lists and raw samples: which tars a worker reads, in what order, and their samples.

webdataset does the reading (``gopen`` for paths and ``pipe:`` commands, its tar iterator and
key grouping). Two of its stages are not used, because neither can be resumed at a sample:
``split_by_node``/``split_by_worker`` (they split by the process's own rank and worker id, while
after a resume the worker slots are rotated, see ``loader.py``) and ``shuffle`` (its buffer and RNG
live in the generator). ``epoch_shards`` and ``ShuffleBuffer`` below replace them with pure
functions of (seed, epoch, slot) and a draw counter.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import time
from typing import Any, Callable, Iterable, Iterator, Optional

import webdataset as wds
from webdataset.shardlists import expand_urls

from allegro_train.data.state import derive_seed

log = logging.getLogger(__name__)

Ref = tuple[int, int]  # (url index, member index within the shard)


def expand_shards(patterns: Iterable[str]) -> list[str]:
    """Shard patterns -> URLs, in order: brace lists (``{000..099}``) expand, local globs match.

    ``pipe:`` and ``scheme://`` URLs are only brace-expanded. A local path that does not exist or
    a glob that matches nothing is an error here, at start-up, not a shard skipped mid-epoch.
    """
    urls: list[str] = []
    for pattern in patterns:
        for url in expand_urls(str(pattern)):
            if url.startswith("pipe:") or "://" in url:
                urls.append(url)
            elif glob.has_magic(url):
                matches = sorted(glob.glob(url))
                if not matches:
                    raise FileNotFoundError(f"data.shards: {url!r} (from {pattern!r}) matches no file")
                urls += matches
            elif not os.path.exists(url):
                raise FileNotFoundError(f"data.shards: {url!r} (from {pattern!r}) does not exist")
            else:
                urls.append(url)
    seen: set[str] = set()
    twice = [u for u in urls if u in seen or seen.add(u)]
    if twice:  # a repeated shard would break "every sample once per epoch"
        raise ValueError(f"data.shards lists these shards more than once: {twice[:5]}")
    return urls


def epoch_shards(num_urls: int, seed: int, epoch: int, slot: int, num_slots: int) -> list[int]:
    """URL indices that slot ``slot`` (rank x workers + worker) of ``num_slots`` reads in ``epoch``.

    One seeded permutation per epoch, dealt round-robin, so slots never share a shard.
    """
    order = list(range(num_urls))
    random.Random(derive_seed(seed, "shards", epoch)).shuffle(order)
    return order[slot::num_slots]


def read_shard(url: str, start: int, retries: int, on_failure: Callable[[str, Exception], None],
               retry_delay: float = 0.5) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(member, sample)`` for samples ``start, start + 1, ...`` of the shard at ``url``.

    A sample is webdataset's dict: ``__key__``, ``__url__`` and one bytes value per extension
    (``json``, ``mp4``, ``latent.npy``, ...). An error while opening or reading reopens the shard
    up to ``retries`` times and skips what was already read; after that the rest of the shard is
    skipped, and ``on_failure`` is told, so the loader logs and counts it.
    """
    position, failures = start, 0
    while True:
        try:
            for member, sample in enumerate(wds.tarfile_samples([{"url": url}])):
                if member < position:  # already yielded before a reopen, or before a resume
                    continue
                yield member, sample
                position = member + 1
            return
        except Exception as error:  # any I/O, tar or pipe error: the shard is retried, then skipped
            failures += 1
            if failures > retries:
                log.error("shard %s failed %d times, skipping its samples from #%d on: %r",
                          url, failures, position, error)
                on_failure(url, error)
                return
            log.warning("shard %s failed at sample #%d (%r); reopening (try %d of %d)",
                        url, position, error, failures, retries)
            time.sleep(retry_delay * failures)


class ShuffleBuffer:
    """webdataset's shuffle (fill to ``size``, then emit a random element per insert) with a counted RNG.

    Draw ``n`` of an epoch is a pure function of (seed, epoch, slot, n), so a restored buffer
    (same items, same order, same ``picks``) continues exactly as the original would have.
    """

    def __init__(self, size: int, seed: int, epoch: int, slot: int, picks: int = 0,
                 items: Optional[list[tuple[Ref, dict]]] = None):
        self.size, self.key, self.picks = size, (seed, "shuffle", epoch, slot), picks
        self.items: list[tuple[Ref, dict]] = items or []

    def _pop(self) -> tuple[Ref, dict]:
        k = random.Random(derive_seed(*self.key, self.picks)).randrange(len(self.items))
        self.picks += 1
        self.items[k], self.items[-1] = self.items[-1], self.items[k]
        return self.items.pop()

    def add(self, ref: Ref, sample: dict) -> Optional[tuple[Ref, dict]]:
        """Insert; once full, return a random element (the one just inserted included)."""
        self.items.append((ref, sample))
        return self._pop() if len(self.items) > self.size else None

    def drain(self) -> Iterator[tuple[Ref, dict]]:
        """Empty the buffer in random order at the end of an epoch."""
        while self.items:
            yield self._pop()

    def refs(self) -> list[list[int]]:
        return [list(ref) for ref, _ in self.items]


def fetch_samples(urls: list[str], refs: Iterable[Ref], retries: int,
                  on_failure: Callable[[str, Exception], None]) -> dict[Ref, dict]:
    """Re-read the samples ``refs`` point at (restoring buffers on resume); each shard is read once.

    Reading stops at the last wanted member. A sample that cannot be read again is absent from
    the result; the caller counts it.
    """
    wanted: dict[int, set[int]] = {}
    for url_index, member in refs:
        wanted.setdefault(url_index, set()).add(member)
    found: dict[Ref, dict] = {}
    for url_index, members in sorted(wanted.items()):
        last = max(members)
        for member, sample in read_shard(urls[url_index], 0, retries, on_failure):
            if member in members:
                found[(url_index, member)] = sample
            if member >= last:
                break
    return found
