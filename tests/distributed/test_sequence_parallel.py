"""Ulysses sequence parallelism under torchrun (CPU, gloo): equal to one process, to fp32 rounding.

The per-rank work is in sp_worker.py; these tests launch it and read the largest differences.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torchrun import check, environment, free_port

WORKER = Path(__file__).with_name("sp_worker.py")


def run_worker(tmp_path: Path, nproc: int, degree: int) -> dict[str, float]:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           f"--master_port={free_port()}", str(WORKER), str(out), str(degree)],
                          capture_output=True, text=True, env=environment(), timeout=900)
    check(done)
    return json.loads(out.read_text())


def assert_equal_to_one_process(results: dict[str, float]) -> None:
    assert {"odd_9/none/grads", "one_token/all/output", "zero0/grads", "zero2/grads", "zero3/grads"} <= set(results)
    bad = {case: err for case, err in results.items() if not err <= 1e-6}
    assert not bad, bad


def test_sp2_outputs_and_gradients_equal_one_process(tmp_path):
    """SP=2 on 2 ranks: outputs and parameter gradients (mean over the group) of even / odd (padded) /
    1-token grids, with and without activation checkpointing; DeepSpeed ZeRO-0/2/3's reduced gradients."""
    assert_equal_to_one_process(run_worker(tmp_path, nproc=2, degree=2))


@pytest.mark.slow
@pytest.mark.parametrize("degree", [2, 4], ids=["sp2xdp2", "sp4"])
def test_four_ranks_equal_one_process(tmp_path, degree):
    """4 ranks: SP=2 x DP=2 (ZeRO averages two sample streams) and SP=4 (9 tokens pad to 12)."""
    assert_equal_to_one_process(run_worker(tmp_path, nproc=4, degree=degree))
