"""Launching ``launch/train_dit.py +stage=demo`` under torchrun with 2 CPU processes over gloo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(run_dir: Path, *overrides: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
            str(REPO / "launch" / "train_dit.py"), "+stage=demo", f"run.dir={run_dir}",
            "logging.wandb_mode=disabled", "data.batch_size=2", *overrides]


def environment(env: dict | None = None) -> dict:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **(env or {})}


def launch(run_dir: Path, *overrides: str, nproc: int = 2, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(run_dir, *overrides, nproc=nproc), capture_output=True, text=True,
                          env=environment(env), timeout=900)


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses(run_dir: Path) -> list[float]:
    return [record["loss"] for record in records(run_dir)]


def check(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
