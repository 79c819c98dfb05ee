"""The DiT trainer in one process (DeepSpeed over a gloo group of one) on synthetic latents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from allegro_train.config import ConfigError, load_config
from allegro_train.data import SyntheticLatents, write_synthetic_shards
from allegro_train.models.dit import AllegroDiT, dit_config
from allegro_train.training.lora import apply_lora, merged_state_dict
from allegro_train.training.trainer import build_dit, build_objective, train

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
    for key in ("loss", "grad_norm", "lr", "samples_per_s", "tokens_per_s", "mfu", "max_mem_gb"):
        assert all(r[key] is not None and r[key] >= 0 for r in records), key
    assert all(r["lr"] == pytest.approx(1e-3) for r in records)
    # the clip and the image bucket take turns; losses binned by bucket and timestep
    assert {"loss_bucket/8x64x64", "loss_bucket/1x64x64"} <= set().union(*records)
    assert any(k.startswith("loss_t/") for k in records[0])

    model = AllegroDiT.from_pretrained(tmp_path / "final" / "transformer")
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.AllegroTransformer3DModel.from_pretrained(tmp_path / "final" / "transformer")
    for key, value in model.state_dict().items():
        assert torch.equal(reference.state_dict()[key], value), key


def test_runs_are_reproducible(tmp_path):
    first = train(demo_config(tmp_path / "a", "train.max_steps=6"))
    second = train(demo_config(tmp_path / "b", "train.max_steps=6"))
    assert first["losses"] == second["losses"]


def test_bf16_accumulation_checkpointing_cosine_warmup(tmp_path):
    summary = train(demo_config(tmp_path, "train.max_steps=4", "parallel.precision=bf16", "optim.grad_accum_steps=2",
                                "model.activation_checkpointing=all", "optim.lr_schedule=cosine",
                                "optim.warmup_steps=2"))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # linear warmup over 2 steps, then cosine from 1e-3 towards 0 at step 4
    assert [r["lr"] for r in records] == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4], abs=1e-9)
    assert all(torch.isfinite(torch.tensor(summary["losses"])))
    assert records[0]["samples_per_s"] > 0 and summary["steps"] == 4


def test_finetune_starts_from_a_diffusers_checkpoint(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(123)
    start = AllegroDiT(dit_config("allegro-debug"))
    reference = diffusers.AllegroTransformer3DModel(**{k: v for k, v in start.config.to_diffusers_dict().items()
                                                       if not k.startswith("_")})
    reference.load_state_dict(start.state_dict())
    reference.save_pretrained(tmp_path / "pretrained")

    train(demo_config(tmp_path / "run", "train.max_steps=2", "optim.lr=1e-7", "optim.weight_decay=0",
                      f"model.pretrained={tmp_path / 'pretrained'}"))
    tuned = AllegroDiT.from_pretrained(tmp_path / "run" / "final" / "transformer")
    drift = max((a - b).abs().max().item() for a, b in zip(tuned.state_dict().values(), start.state_dict().values()))
    assert drift < 1e-5  # two tiny AdamW steps from the pretrained weights, not from a fresh init


def test_loss_matches_the_formula_on_a_hand_made_batch():
    cfg = load_config(["+stage=demo"])
    torch.manual_seed(0)
    model = AllegroDiT(dit_config("allegro-debug")).eval()
    batch = SyntheticLatents((2, 4, 4), 4, 16, 32, seed=3).batch(0, 3)
    x0, text, mask = batch["latents"], batch["text_states"], batch["text_mask"]
    objective = build_objective(cfg.diffusion, num_tokens=8)
    with torch.no_grad():
        out = objective.loss(model, x0, {"text_states": text, "text_mask": mask}, torch.Generator().manual_seed(7))

        # The released recipe written out by hand, drawing in the same order from the same seed.
        g = torch.Generator().manual_seed(7)
        noise = torch.randn(x0.shape, generator=g) + 0.02 * torch.randn(3, 4, 1, 1, 1, generator=g)
        t = torch.randint(0, 1000, (3,), generator=g)
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
        alpha_bar = torch.cumprod(1 - betas, dim=0)[t].double()
        a, s = alpha_bar.sqrt().float()[:, None, None, None, None], (1 - alpha_bar).sqrt().float()[:, None, None, None, None]
        prediction = model(a * x0 + s * noise, t, text, mask)
        snr = alpha_bar / (1 - alpha_bar)
        weight = (snr.clamp(max=5.0) / snr).float()
        expected = (weight * (prediction - noise).square().mean(dim=(1, 2, 3, 4))).mean()
    assert torch.equal(out.timesteps, t)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-7)


def test_trains_on_precomputed_shards(tmp_path):
    pattern, null = write_synthetic_shards(tmp_path / "shards", [(8, 64, 64)], caption_channels=32, text_len=16)
    with pytest.raises(ConfigError, match="data.null_caption"):
        demo_config(tmp_path / "run", "data=shards", f"data.shards=['{pattern}']")
    cfg = demo_config(tmp_path / "run", "data=shards", f"data.shards=['{pattern}']", f"data.null_caption={null}",
                      "data.num_workers=0", "data.buckets=[{frames: 8, height: 64, width: 64}]",
                      "model=allegro_debug", "parallel=single", "parallel.precision=fp32", "train.max_steps=3")
    summary = train(cfg)
    assert summary["steps"] == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["data/bucket/8x64x64"] == 3 * 4  # three batches of 4 from the one bucket
    assert not (tmp_path / "run" / "synthetic_shards").exists()


def test_launcher_smoke_run_and_bad_key(tmp_path):
    cmd = [sys.executable, str(REPO / "launch" / "train_dit.py"), "+stage=demo", f"run.dir={tmp_path}",
           "train.max_steps=3", "logging.wandb_mode=offline"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "final" / "transformer" / "config.json").is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert list((tmp_path / "wandb").glob("offline-run-*"))  # W&B ran, offline
    assert (tmp_path / "checkpoints" / "step_000000003" / "trainer.json").is_file()

    bad = subprocess.run(cmd + ["optim.learning_rate=1"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "learning_rate" in bad.stderr
    assert "training allegro-debug" not in bad.stderr  # failed before any model was built


def test_lora_merge_gives_the_adapted_model():
    torch.manual_seed(0)
    plain = AllegroDiT(dit_config("allegro-debug"))
    adapted = apply_lora(AllegroDiT(dit_config("allegro-debug")), rank=4, alpha=8.0, targets=["to_q", "to_out.0"])
    adapted.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():  # B starts at zero; make the adapters do something
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    merged = AllegroDiT(dit_config("allegro-debug"))
    merged.load_state_dict(merged_state_dict(adapted.state_dict(), rank=4, alpha=8.0))
    batch = SyntheticLatents((2, 4, 4), 4, 16, 32, seed=1).batch(0, 2)
    args = (batch["latents"], torch.tensor([3, 700]), batch["text_states"], batch["text_mask"])
    with torch.no_grad():
        torch.testing.assert_close(merged(*args), adapted(*args), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(merged(*args), plain(*args), atol=1e-3)


def test_lora_finetune_exports_merged_weights_and_adapters(tmp_path):
    torch.manual_seed(5)
    start = AllegroDiT(dit_config("allegro-debug"))
    start.save_pretrained(tmp_path / "pretrained")
    train(demo_config(tmp_path / "run", "train.max_steps=3", "optim.lr=1e-2", "model.lora_rank=4",
                      f"model.pretrained={tmp_path / 'pretrained'}"))
    final = tmp_path / "run" / "final"
    adapters = load_file(final / "lora" / "adapter_model.safetensors")
    assert "transformer_blocks.0.attn1.to_q.lora_A.weight" in adapters and len(adapters) == 2 * 4 * 2 * 2
    assert json.loads((final / "lora" / "adapter_config.json").read_text())["r"] == 4
    tuned = AllegroDiT.from_pretrained(final / "transformer")
    before, after = start.state_dict(), tuned.state_dict()
    assert torch.equal(after["transformer_blocks.0.ff.net.2.weight"], before["transformer_blocks.0.ff.net.2.weight"])
    assert not torch.equal(after["transformer_blocks.0.attn1.to_q.weight"], before["transformer_blocks.0.attn1.to_q.weight"])
    diffusers = pytest.importorskip("diffusers")
    diffusers.AllegroTransformer3DModel.from_pretrained(final / "transformer")


def test_online_path_encodes_raw_clips_with_the_frozen_vae_and_t5(tmp_path, tiny_t5):
    sys.path.insert(0, str(REPO / "tests" / "data"))
    from shardgen import video_sample, write_shard

    from allegro_train.models.vae import VideoVAE, vae_config

    VideoVAE(vae_config("allegro-vae-debug")).save_pretrained(tmp_path / "vae")
    write_shard(tmp_path / "raw-0.tar", [video_sample(f"clip_{i}", 8, 64, 80, "a red square moves right")
                                         for i in range(4)])
    cfg = demo_config(tmp_path / "run", "data=shards", f"data.shards=['{tmp_path}/raw-0.tar']",
                      "data.precomputed=false", "data.decode_backend=pyav", "data.num_workers=0",
                      "data.buckets=[{frames: 8, height: 64, width: 64}]", "data.batch_size=2",
                      f"model.vae_pretrained={tmp_path / 'vae'}", f"model.text_encoder_pretrained={tiny_t5}",
                      "model=allegro_debug", "parallel=single", "parallel.precision=fp32", "train.max_steps=2")
    summary = train(cfg)
    assert summary["steps"] == 2 and all(torch.isfinite(torch.tensor(summary["losses"])))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["data/bucket/8x64x64"] == 4  # two batches of 2 raw clips, encoded on the fly


def test_validation_samples_are_written_and_logged(tmp_path, tiny_t5):
    from allegro_train.models.vae import VideoVAE, vae_config

    VideoVAE(vae_config("allegro-vae-debug")).save_pretrained(tmp_path / "vae")
    cfg = demo_config(tmp_path / "run", "train.max_steps=2", "validation.every_steps=2", "validation.steps=2",
                      "validation.prompts=[a red square moves right,a blue circle]", "logging.wandb_mode=offline",
                      f"model.vae_pretrained={tmp_path / 'vae'}", f"model.text_encoder_pretrained={tiny_t5}")
    train(cfg)
    folder = tmp_path / "run" / "samples" / "step_000000002"
    index = json.loads((folder / "index.json").read_text())
    assert [entry["prompt"] for entry in index] == ["a red square moves right", "a blue circle"]
    import av

    with av.open(str(folder / index[0]["file"])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (64, 64, 3)  # the demo's first bucket, 8 x 64 x 64
    media = list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/videos/samples_*.mp4"))
    assert len(media) == 2  # logged to W&B as videos


def test_mid_run_resume_is_bit_exact(tmp_path):
    """Stop at step 5 (a checkpoint), relaunch to 8: the losses of an uninterrupted 8-step run, bitwise.

    Separate processes, as real relaunches are: DeepSpeed's FusedAdam kept its step count in
    process-global state, outside its state dict, so only a fresh process showed its bias
    correction restarting after a resume (fixed by using torch's AdamW, parallel/zero.py)."""
    def launch(run_dir, steps):
        cmd = [sys.executable, str(REPO / "launch" / "train_dit.py"), "+stage=demo", f"run.dir={run_dir}",
               f"train.max_steps={steps}", "data.batch_size=2", "parallel.precision=fp32",
               "checkpoint.every_steps=5", "logging.wandb_mode=disabled"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    launch(tmp_path / "split", 5)
    assert launch(tmp_path / "split", 8) == launch(tmp_path / "whole", 8)


def test_fused_qkv_trains_like_unfused_and_writes_diffusers_layout(tmp_path):
    """model.fused_qkv with EMA and selective checkpointing: the unfused run's losses (fp32
    rounding), and every file it writes keyed as diffusers (the export and DeepSpeed's module
    states); resuming under the other setting is refused before anything loads."""
    common = ("train.max_steps=4", "checkpoint.every_steps=2", "optim.ema_decay=0.9",
              "model.activation_checkpointing=selective")
    plain = train(demo_config(tmp_path / "plain", *common))
    fused_cfg = demo_config(tmp_path / "fused", *common, "model.fused_qkv=true")
    assert build_dit(fused_cfg.model).transformer_blocks[0].attn1.fused
    assert build_dit(fused_cfg.model, ti2v=True).transformer_blocks[0].attn1.fused  # the TI2V variant fuses too
    fused = train(fused_cfg)
    assert fused["losses"] == pytest.approx(plain["losses"], rel=1e-5)

    diffusers = pytest.importorskip("diffusers")
    exported = diffusers.AllegroTransformer3DModel.from_pretrained(tmp_path / "fused" / "final" / "transformer")
    reference = AllegroDiT.from_pretrained(tmp_path / "plain" / "final" / "transformer").state_dict()
    assert exported.state_dict().keys() == reference.keys()
    for key, value in exported.state_dict().items():
        torch.testing.assert_close(value, reference[key], atol=1e-5, rtol=1e-4, msg=key)
    module = torch.load(tmp_path / "fused" / "checkpoints" / "step_000000004" / "deepspeed" / "mp_rank_00_model_states.pt",
                        weights_only=False)["module"]
    assert module.keys() == reference.keys()

    with pytest.raises(ConfigError, match="fused_qkv"):
        train(demo_config(tmp_path / "fused", "train.max_steps=6", "checkpoint.every_steps=2", "optim.ema_decay=0.9"))
