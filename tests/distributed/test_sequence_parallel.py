"""Ulysses sequence parallelism under torchrun (CPU, gloo): equal to one process, to fp32 rounding.

Model and DeepSpeed checks run in sp_worker.py (these tests launch it and read the largest
differences); training checks run the trainer's demo stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torchrun import check, environment, free_port, launch, losses, records

WORKER = Path(__file__).with_name("sp_worker.py")


def run_worker(tmp_path: Path, nproc: int, degree: int) -> dict[str, float]:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           f"--master_port={free_port()}", str(WORKER), str(out), str(degree)],
                          capture_output=True, text=True, env=environment(), timeout=900)
    check(done)
    return json.loads(out.read_text())


def assert_equal_to_one_process(results: dict[str, float]) -> None:
    assert {"odd_9/none/grads", "one_token/all/output", "odd_9/all/saved_bytes", "odd_9/selective/grads",
            "odd_9/selective/saved_bytes", "zero0/grads", "zero2/grads", "zero3/grads"} <= set(results)
    bad = {case: err for case, err in results.items() if not err <= 1e-6}
    assert not bad, bad


def test_sp2_outputs_and_gradients_equal_one_process(tmp_path):
    """SP=2 on 2 ranks: outputs and parameter gradients (mean over the group) of even / odd (padded) /
    1-token grids, without, with full and with selective activation checkpointing; DeepSpeed
    ZeRO-0/2/3's reduced gradients; the bytes autograd saves on each rank equal parallel/memory.py's formula."""
    assert_equal_to_one_process(run_worker(tmp_path, nproc=2, degree=2))


@pytest.mark.slow
@pytest.mark.parametrize("degree", [2, 4], ids=["sp2xdp2", "sp4"])
def test_four_ranks_equal_one_process(tmp_path, degree):
    """4 ranks: SP=2 x DP=2 (ZeRO averages two sample streams) and SP=4 (9 tokens pad to 12)."""
    assert_equal_to_one_process(run_worker(tmp_path, nproc=4, degree=degree))


# The demo stage on buckets with 30 and 15 tokens: the images' 15 split as 8 + 7 (padding) under SP=2.
ODD_BUCKETS = "data.buckets=[{frames: 8, height: 48, width: 80}, {frames: 1, height: 48, width: 80}]"
TRAIN = ("parallel=zero2", "parallel.precision=fp32", ODD_BUCKETS, "checkpoint.every_steps=5")


@pytest.fixture(scope="module")
def sp2_run(tmp_path_factory) -> Path:
    """10 uninterrupted steps with SP=2 on 2 ranks (one data-parallel stream)."""
    run = tmp_path_factory.mktemp("sp2") / "run"
    check(launch(run, "train.max_steps=10", "parallel.sequence_parallel=2", *TRAIN))
    return run


@pytest.mark.slow
def test_sp2_training_logs_the_losses_of_one_process(tmp_path, sp2_run):
    single = tmp_path / "single"
    check(launch(single, "train.max_steps=10", *TRAIN, nproc=1))
    one, two = records(single), records(sp2_run)
    assert [r["step"] for r in two] == list(range(1, 11))
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-5), key
    for record in two:  # one batch of 2 samples a step, not one per rank
        assert record["samples_per_s"] * record["step_seconds"] == pytest.approx(2)


@pytest.mark.slow
def test_sp2_resume_continues_exactly_and_refuses_another_degree(tmp_path, sp2_run):
    split = tmp_path / "split"
    check(launch(split, "train.max_steps=5", "parallel.sequence_parallel=2", *TRAIN))
    other = launch(split, "train.max_steps=10", *TRAIN)  # SP=1 on the same 2 ranks
    assert other.returncode != 0
    assert "parallel.sequence_parallel=1" in other.stderr and "sequence_parallel=2" in other.stderr
    check(launch(split, "train.max_steps=10", "parallel.sequence_parallel=2", *TRAIN))
    assert losses(split) == losses(sp2_run)
