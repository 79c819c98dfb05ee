"""DeepSpeed ZeRO-2/3 over gloo with 2 processes: learning, exact resume, crash safety, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torchrun import check, launch, losses

from allegro_train.training.checkpoint import CRASH_ENV

pytestmark = pytest.mark.slow


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / "transformer" / "diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize("zero", [
    ["parallel=zero2", "parallel.precision=fp32"],
    ["parallel=zero3_offload", "parallel.precision=fp32", "optim.ema_decay=0.9"],
], ids=["zero2", "zero3_offload_ema"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, zero):
    """Stop at step 10, relaunch to 20: the same per-step losses and final weights, bit for bit."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    check(launch(whole, "train.max_steps=20", "checkpoint.every_steps=10", *zero))
    check(launch(split, "train.max_steps=10", "checkpoint.every_steps=10", *zero))
    assert (split / "checkpoints" / "step_000000010" / "trainer.json").is_file()
    check(launch(split, "train.max_steps=20", "checkpoint.every_steps=10", *zero))

    assert losses(split) == losses(whole)
    assert len(losses(whole)) == 20
    assert sum(losses(whole)[-5:]) < 0.9 * sum(losses(whole)[:5])  # it learns (deterministic run)
    a, b = final_weights(whole), final_weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    diffusers = pytest.importorskip("diffusers")
    diffusers.AllegroTransformer3DModel.from_pretrained(whole / "final" / "transformer")


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    crashed = launch(run, "train.max_steps=6", "checkpoint.every_steps=3", "checkpoint.keep_last=2",
                     "parallel=zero2", "parallel.precision=fp32", env={CRASH_ENV: "6"})
    assert crashed.returncode != 0
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith(".")) == ["step_000000003"]
    assert (checkpoints / ".step_000000006.tmp").is_dir()  # the half-written one, never renamed

    check(launch(run, "train.max_steps=6", "checkpoint.every_steps=3", "checkpoint.keep_last=2",
                 "parallel=zero2", "parallel.precision=fp32"))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000000003", "step_000000006"]
    reference = tmp_path / "reference"
    check(launch(reference, "train.max_steps=6", "checkpoint.every_steps=3", "checkpoint.keep_last=2",
                 "parallel=zero2", "parallel.precision=fp32"))
    assert losses(run) == losses(reference)
