"""Fault handling under torchrun (2 CPU processes over gloo): hang, NaN losses, preemption.

Faults are injected through the environment variables of allegro_train/training/faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torchrun import check, command, environment, launch, losses, records

from allegro_train.training.faults import EXIT_HANG, HANG_ENV, NAN_ENV

pytestmark = pytest.mark.slow
ZERO2 = ("parallel=zero2", "parallel.precision=fp32")


def complete_checkpoints(run_dir: Path) -> list[str]:
    folder = run_dir / "checkpoints"
    return sorted(p.name for p in folder.iterdir() if (p / "trainer.json").is_file())


def test_hanging_rank_dumps_stacks_of_all_ranks_and_exits(tmp_path):
    run = tmp_path / "run"
    done = launch(run, "train.max_steps=6", "train.watchdog_seconds=4", "train.watchdog_first_grace=300", *ZERO2,
                  env={HANG_ENV: "1:3"})
    assert done.returncode != 0
    assert "watchdog: no training step completed within 4 s" in done.stderr
    stuck, waiting = (run / "hang_rank_1.txt").read_text(), (run / "hang_rank_0.txt").read_text()
    assert "maybe_inject_faults" in stuck  # rank 1 sleeps in the injected hang
    assert "all_finite" in waiting  # rank 0 waits for it in the NaN guard's all-reduce
    assert f"exitcode  : {EXIT_HANG}" in done.stderr  # torchrun's failure summary names the watchdog's status


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(tmp_path):
    """NaN on rank 0 at attempt 3 (skipped, counted), then at 6, 7, 8: K=3 in a row stop the run."""
    run = tmp_path / "run"
    done = launch(run, "train.max_steps=10", "train.max_nonfinite_in_row=3", "checkpoint.every_steps=2",
                  "checkpoint.keep_last=5", *ZERO2, env={NAN_ENV: "3,6,7,8"})
    assert done.returncode != 0
    assert "NonfiniteLossError: 3 consecutive steps after step 4" in done.stderr
    logged = records(run)
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert [r["skipped_nonfinite"] for r in logged] == [0, 0, 1, 1]
    assert all(r["loss"] == r["loss"] for r in logged)  # no NaN reached the weights or the log
    assert complete_checkpoints(run) == ["step_000000002", "step_000000004"]
    assert not list((run / "checkpoints").glob(".*.tmp"))
    rank0 = torch.load(run / "checkpoints" / "step_000000004" / "rank_00000.pt", weights_only=True)
    assert rank0["skipped_nonfinite"] == 1


def test_sigterm_checkpoints_and_the_relaunch_resumes_exactly(tmp_path):
    split, whole = tmp_path / "split", tmp_path / "whole"
    overrides = ("checkpoint.every_steps=1000", *ZERO2)
    # a long run, interrupted once a few steps are logged
    proc = subprocess.Popen(command(split, "train.max_steps=2000", *overrides), env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while len(records(split)) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before SIGTERM"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)  # torchrun and its trainers, as SLURM signals a job step
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "SIGTERM: checkpoint of step" in out + err, (out + err)[-5000:]  # Hydra logs to stdout
    (stopped,) = complete_checkpoints(split)
    step = json.loads((split / "checkpoints" / stopped / "trainer.json").read_text())["step"]
    assert 3 <= step < 2000 and not (split / "final").exists()

    check(launch(split, f"train.max_steps={step + 3}", *overrides))
    check(launch(whole, f"train.max_steps={step + 3}", *overrides))
    resumed, reference = losses(split), losses(whole)
    assert len(reference) == step + 3
    assert resumed == reference  # bit for bit, every step after the preemption too
