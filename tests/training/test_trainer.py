"""The single-process DiT trainer on synthetic latents: it learns, logs, and writes diffusers weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allegro_train.config import ConfigError, load_config
from allegro_train.models.dit import AllegroDiT
from allegro_train.training.trainer import train

REPO = Path(__file__).resolve().parents[2]


def demo_config(tmp_path, *overrides):
    return load_config(["+stage=demo", f"run.dir={tmp_path}", "logging.wandb_mode=disabled", *overrides])


def test_demo_stage_learns_and_writes_loadable_weights(tmp_path):
    summary = train(demo_config(tmp_path, "train.max_steps=120"))
    assert summary["steps"] == 120
    # conditioning on the synthetic prompts must cut the denoising loss by more than half
    assert summary["last_loss"] < 0.5 * summary["first_loss"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 121))
    assert {r["bucket"] for r in records} == {0, 1}  # the clip and the image bucket take turns
    assert all(r["grad_norm"] > 0 and r["lr"] == pytest.approx(1e-3) for r in records)

    model = AllegroDiT.from_pretrained(tmp_path / "final" / "transformer")
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.AllegroTransformer3DModel.from_pretrained(tmp_path / "final" / "transformer")
    for key, value in model.state_dict().items():
        assert torch.equal(reference.state_dict()[key], value), key


def test_runs_are_reproducible(tmp_path):
    first = train(demo_config(tmp_path / "a", "train.max_steps=6"))
    second = train(demo_config(tmp_path / "b", "train.max_steps=6"))
    assert first["first_loss"] == second["first_loss"] and first["last_loss"] == second["last_loss"]


def test_bf16_autocast_and_accumulation_run(tmp_path):
    summary = train(demo_config(tmp_path, "train.max_steps=2", "parallel.precision=bf16", "optim.grad_accum_steps=2",
                                "model.activation_checkpointing=all", "optim.lr_schedule=cosine",
                                "optim.warmup_steps=1"))
    assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["last_loss"]))


def test_what_is_not_built_yet_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="data.shards"):
        train(demo_config(tmp_path, "data=shards", "data.shards=[a.tar]"))


def test_launcher_smoke_run_and_bad_key(tmp_path):
    cmd = [sys.executable, str(REPO / "launch" / "train_dit.py"), "+stage=demo", f"run.dir={tmp_path}",
           "train.max_steps=3", "logging.wandb_mode=offline", f"hydra.run.dir={tmp_path}/hydra"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**_env(), "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "final" / "transformer" / "config.json").is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert list((tmp_path / "wandb").glob("offline-run-*"))  # W&B ran, offline

    bad = subprocess.run(cmd + ["optim.learning_rate=1"], capture_output=True, text=True, env=_env())
    assert bad.returncode != 0 and "learning_rate" in bad.stderr
    assert not (tmp_path / "final.tmp").exists()


def _env():
    import os

    return {**os.environ, "HYDRA_FULL_ERROR": "0"}
