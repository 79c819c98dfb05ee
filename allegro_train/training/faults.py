"""Fault handling for long runs: a hang watchdog, a non-finite loss guard and a preemption flag.

A multi-week run on a cluster meets three failures that otherwise cost days:

- a hang (one rank stuck in a collective, a dead NFS mount): ``Watchdog`` dumps every thread's
  Python stack of its rank and exits non-zero, so the scheduler requeues instead of burning the
  allocation. Every rank runs its own, so the dumps of all ranks show where each one stood;
- a NaN or inf loss: ``NonfiniteGuard`` agrees across ranks (one all-reduce) to skip the step
  before backward, counts skips and stops the run after K in a row;
- preemption (SLURM sends SIGTERM ahead of the kill): ``Preemption`` turns the signal into a flag
  that the trainer reads at the end of a step, to write a checkpoint and exit cleanly.

Test-only fault injection, read from the environment like checkpoint.py's
``ALLEGRO_TRAIN_KILL_DURING_CHECKPOINT``:

- ``ALLEGRO_TRAIN_NAN_LOSS_AT="4,5"``: rank 0's loss is NaN at these attempts (1-based loop
  iterations, skipped ones included: ``step + skipped + 1``); the other ranks must follow it;
- ``ALLEGRO_TRAIN_HANG_AT="1:3"``: rank 1 sleeps forever in attempt 3 (before its backward).
"""

from __future__ import annotations

import faulthandler
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from allegro_train.parallel.distributed import all_reduce_sum

log = logging.getLogger(__name__)

NAN_ENV = "ALLEGRO_TRAIN_NAN_LOSS_AT"
HANG_ENV = "ALLEGRO_TRAIN_HANG_AT"
EXIT_HANG = 86  # the watchdog's exit status: distinct from a crash (1) and from a signal (128 + n)


class NonfiniteLossError(RuntimeError):
    """K consecutive steps had a non-finite loss; the last checkpoint is the last good state."""


class Watchdog:
    """A daemon thread that ends the process when no step completes within ``seconds``.

    ``beat()`` after each completed step. The first deadline is ``seconds + first_grace``, because
    the first step also builds DeepSpeed's kernels and warms the loader. On expiry it writes every
    thread's stack (faulthandler, which needs no GIL-holding cooperation from the stuck thread) to
    stderr and ``dump_path``, waits ``exit_delay`` so the other ranks, whose deadlines are the same
    within a step's skew, dump too before the first exit makes the launcher tear them down, then
    ``os._exit(EXIT_HANG)``: a clean exit could block on the very collective that hangs.
    """

    def __init__(self, seconds: float, dump_path: Path, first_grace: float = 600.0, exit_delay: float = 3.0):
        self.seconds, self.dump_path, self.exit_delay = seconds, Path(dump_path), exit_delay
        self._deadline = time.monotonic() + seconds + first_grace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="allegro-watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        self._deadline = time.monotonic() + self.seconds

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.seconds / 4)):
            if time.monotonic() > self._deadline:
                self._fire()

    def _fire(self) -> None:
        message = f"watchdog: no training step completed within {self.seconds:g} s; stacks of every thread:\n"
        sys.stderr.write(message)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        self.dump_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dump_path, "w") as f:
            f.write(message)
            f.flush()
            faulthandler.dump_traceback(file=f, all_threads=True)
        sys.stderr.flush()
        time.sleep(self.exit_delay)
        os._exit(EXIT_HANG)


class NonfiniteGuard:
    """Skip a step whose loss is NaN or inf on any rank; stop after ``max_in_row`` in a row."""

    def __init__(self, max_in_row: int, skipped: int = 0):
        self.max_in_row, self.skipped, self.in_row = max_in_row, skipped, 0

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Collective: every rank calls it with its loss and gets the same answer."""
        bad = torch.tensor([0.0 if math.isfinite(loss.item()) else 1.0], dtype=torch.float64)
        return float(all_reduce_sum(bad)[0]) == 0.0

    def micro_batch_ok(self, loss: torch.Tensor, micro: int, step: int) -> bool:
        """Collective: False when the step after ``step`` must be skipped (a non-finite loss on any rank in
        its first micro-batch). In a later micro-batch it raises: the earlier micro-batches' gradients
        are already accumulated inside DeepSpeed, so the step can no longer be skipped."""
        if self.all_finite(loss):
            return True
        if micro > 0:
            raise NonfiniteLossError(
                f"non-finite loss in micro-batch {micro} of the step after {step}: the gradients of the "
                "earlier micro-batches are already accumulated inside DeepSpeed, so the step cannot be "
                "skipped (optim.grad_accum_steps > 1); the newest complete checkpoint is intact")
        return False

    def record_skip(self, step: int) -> None:
        self.skipped += 1
        self.in_row += 1
        log.warning("non-finite loss at the attempt after step %d on some rank: step skipped "
                    "(%d in a row, %d in all)", step, self.in_row, self.skipped)
        if self.in_row >= self.max_in_row:
            raise NonfiniteLossError(
                f"{self.in_row} consecutive steps after step {step} had a non-finite loss "
                f"(train.max_nonfinite_in_row={self.max_in_row}); stopping. The newest complete checkpoint "
                "predates them: lower optim.lr, check the data, or raise the limit and relaunch")

    def record_good(self) -> None:
        self.in_row = 0


class Preemption:
    """SIGTERM sets a flag instead of killing the process; ``requested()`` agrees across ranks.

    The signal may reach ranks a step apart, so the flag is all-reduced once a step: every rank
    stops after the same step and the checkpoint is written collectively.
    """

    def __init__(self):
        self._flag = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self._flag = True

    def requested(self) -> bool:
        """Collective: True on every rank when any rank got SIGTERM."""
        flag = torch.tensor([1.0 if self._flag else 0.0], dtype=torch.float64)
        return float(all_reduce_sum(flag)[0]) > 0

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


class FaultHandlers:
    """The trainers' view of the preemption flag and the optional watchdog (``train.*``), consulted
    once per step. ``close()`` stops the watchdog and restores the SIGTERM handler."""

    def __init__(self, train_cfg, dump_path: Path):
        self.preemption = Preemption()
        self.watchdog = None
        if train_cfg.watchdog_seconds is not None:  # started now: the first deadline covers the build too
            self.watchdog = Watchdog(train_cfg.watchdog_seconds, dump_path, train_cfg.watchdog_first_grace)

    def beat(self) -> None:
        if self.watchdog is not None:
            self.watchdog.beat()

    def after_step(self, save: Callable[[], None], checkpoint_due: bool) -> bool:
        """Collective, after a completed step: checkpoint when due or on SIGTERM; True means stop now."""
        preempted = self.preemption.requested()
        if preempted or checkpoint_due:
            save()
        self.beat()
        return preempted

    def after_skip(self, save: Callable[[], None]) -> bool:
        """Collective, after a skipped step: a SIGTERM still checkpoints (the state before the skip)."""
        self.beat()
        if self.preemption.requested():
            save()
            return True
        return False

    def stop_watchdog(self) -> None:
        """Before work that only rank 0 does (the export) while the others wait."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None

    def close(self) -> None:
        self.stop_watchdog()
        self.preemption.restore()


def maybe_inject_faults(loss: torch.Tensor, rank: int, attempt: int) -> torch.Tensor:
    """Test hooks (module docstring): hang this rank, or return a NaN loss for rank 0."""
    hang = os.environ.get(HANG_ENV)
    if hang and hang == f"{rank}:{attempt}":
        log.warning("%s=%s: rank %d hangs", HANG_ENV, hang, rank)
        while True:
            time.sleep(60)
    nan_at = os.environ.get(NAN_ENV)
    if rank == 0 and nan_at and str(attempt) in nan_at.split(","):
        log.warning("%s=%s: rank 0's loss is NaN at attempt %d", NAN_ENV, nan_at, attempt)
        return loss * float("nan")
    return loss
