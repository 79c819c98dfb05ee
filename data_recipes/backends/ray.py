"""Run per-video work with Ray Data: one Ray task a raw video, on a Ray cluster or a local instance.

The same ``process_video`` as the local backend runs inside Ray's worker processes, so the
catalog and report are the same; workers write clips and work files straight to ``output_dir``,
which every node must mount at the same path. Each video is its own block (videos differ in length
by orders of magnitude, so one per task balances best). Tasks and results cross Ray as pickled
bytes: Ray Data would otherwise try, and warn about, converting our dataclasses to Arrow. A Ray
worker process keeps the scorers and captioners it built (``pipeline._plugins``) for later tasks.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

from data_recipes.config import RayConfig

T = TypeVar("T")
R = TypeVar("R")


def _apply(row: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    return {"result": pickle.dumps(fn(pickle.loads(row["task"])))}


class RayBackend:
    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def map(self, fn: Callable[[T], R], tasks: Iterable[T], desc: str) -> Iterator[R]:
        """``fn(task)`` for every task, in completion order. Joins ``ray.address`` unless this process
        is already connected to Ray (then that instance is used as it is)."""
        import ray

        tasks = list(tasks)
        if not tasks:
            return
        if not ray.is_initialized():
            ray.init(address=self.cfg.address)
        dataset = ray.data.from_items([{"task": pickle.dumps(t)} for t in tasks], override_num_blocks=len(tasks))
        results = dataset.map(_apply, fn_kwargs={"fn": fn}, num_cpus=self.cfg.num_cpus_per_video,
                              num_gpus=self.cfg.num_gpus_per_video, concurrency=self.cfg.concurrency)
        for row in tqdm(results.iter_rows(), total=len(tasks), desc=desc, unit="video", dynamic_ncols=True):
            yield pickle.loads(row["result"])
