"""Run per-video work on this machine: in this process (workers=1) or a process pool.

The pool uses the spawn start method: forked children would inherit torch's and OpenCV's thread
pools mid-state, which can deadlock. Results come back as they finish, so the progress bar and
the work files advance while slow videos are still running.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


class LocalBackend:
    def __init__(self, workers: int):
        self.workers = workers

    def map(self, fn: Callable[[T], R], tasks: Iterable[T], desc: str) -> Iterator[R]:
        """``fn(task)`` for every task, in completion order, with a progress bar. ``fn`` must be a
        module-level function and the tasks picklable when ``workers > 1``."""
        tasks = list(tasks)
        with tqdm(total=len(tasks), desc=desc, unit="video", dynamic_ncols=True) as bar:
            if self.workers == 1:
                for task in tasks:
                    yield fn(task)
                    bar.update()
                return
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
                for future in as_completed([pool.submit(fn, task) for task in tasks]):
                    yield future.result()
                    bar.update()
