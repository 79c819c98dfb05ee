"""TI2V training: task masks as the released code builds them, the task mix, config checks, and a
short demo run whose model learns to use the condition."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from allegro_train.config import ConfigError, load_config
from allegro_train.data import SyntheticLatents, latent_shape
from allegro_train.models.dit import AllegroDiT, AllegroTI2VDiT, condition_mask, dit_config
from allegro_train.training.conditioning import Conditioner, task_mask, with_condition
from allegro_train.training.trainer import build_dit, build_objective, train

REPO = Path(__file__).resolve().parents[2]
FRAMES, GRID = 16, (4, 8, 8)  # 16 x 64 x 64 pixels -> 4 x 8 x 8 latents


def released_latent_mask(generate: torch.Tensor, grid) -> torch.Tensor:
    """The released ``prepare_mask_masked_video`` restated: a [B, 1, T, H, W] pixel mask, bilinear
    resize of each frame to the latent size, then ``.view(B, 4, T', H', W')``."""
    batch, frames = generate.shape
    pixels = generate[:, None, :, None, None].expand(batch, 1, frames, 64, 64)
    resized = F.interpolate(pixels.reshape(batch * frames, 1, 64, 64), size=grid[1:], mode="bilinear")
    return resized.reshape(batch, 1, frames, *grid[1:]).view(batch, 4, grid[0], *grid[1:])


@pytest.mark.parametrize("task, given, kept", [
    ("i2v", 1, [0]),
    ("interpolation", 1, [0, 15]),
    ("v2v", 6, [0, 1, 2, 3, 4, 5]),
])
def test_task_masks_and_their_latent_layout_are_the_released_ones(task, given, kept):
    generate = task_mask(task, FRAMES, given)
    assert torch.equal(generate, torch.tensor([0.0 if i in kept else 1.0 for i in range(FRAMES)]))
    mask = condition_mask(generate[None], GRID, channels=4)  # [1, 4, 4, 8, 8]
    assert torch.allclose(mask, released_latent_mask(generate[None], GRID), atol=1e-6)
    # the layout is a reshape: pixel frame f sits at channel f // T', latent frame f % T'
    zeros = {(c, t) for c in range(4) for t in range(4) if mask[0, c, t].max() == 0}
    assert zeros == {(f // 4, f % 4) for f in kept}
    with pytest.raises(ValueError, match="4 mask channels x 3 latent frames"):
        condition_mask(generate[None], (3, 8, 8), channels=4)


def test_task_mix_follows_the_weights_and_v2v_frames():
    generator = torch.Generator().manual_seed(0)
    tasks, generate = Conditioner(0.5, 0.4, 0.1).draw(20_000, FRAMES, generator)
    for task, share in (("i2v", 0.5), ("interpolation", 0.4), ("v2v", 0.1)):
        assert abs(tasks.count(task) / len(tasks) - share) < 0.015, task
    given = [(1 - g).sum() for task, g in zip(tasks, generate) if task == "v2v"]
    assert min(given) == 1 and max(given) == FRAMES  # the released randint(1, T), both ends included

    tasks, generate = Conditioner(0, 0, 2, v2v_frames=5).draw(50, FRAMES, generator)
    assert set(tasks) == {"v2v"} and torch.equal(generate, task_mask("v2v", FRAMES, 5).expand(50, -1))
    with pytest.raises(ValueError, match="positive sum"):
        Conditioner(0, 0, 0)


def test_raw_clips_are_masked_before_the_vae_and_precomputed_latents_in_latent_space():
    class Encoder:  # stands in for the frozen VAE of training/inputs.py
        def encode_video(self, video, generator):
            self.video = video
            return torch.ones(video.shape[0], 4, *GRID)

    video = torch.rand(2, 3, FRAMES, 64, 64) * 2 - 1
    latents = torch.randn(2, 4, *GRID)
    i2v = Conditioner(1, 0, 0)
    encoder = Encoder()
    condition = i2v({"bucket": (FRAMES, 64, 64), "video": video}, latents, encoder, torch.Generator())
    assert torch.equal(encoder.video[:, :, 0], video[:, :, 0])  # the given frame, unchanged
    assert encoder.video[:, :, 1:].abs().max() == 0  # frames to generate: 0, mid-grey in [-1, 1]
    assert condition.shape == (2, 8, *GRID) and torch.equal(condition[:, :4], torch.ones(2, 4, *GRID))

    condition = i2v({"bucket": (FRAMES, 64, 64)}, latents, None, torch.Generator())
    # latent frame 0 covers pixel frames 0-3, one of which is given: kept; the others zeroed
    assert torch.equal(condition[:, :4, 0], latents[:, :, 0]) and condition[:, :4, 1:].abs().max() == 0
    assert torch.equal(condition[:, 4:], condition_mask(task_mask("i2v", FRAMES)[None].expand(2, -1), GRID, 4))


def test_bad_ti2v_config_fails_naming_the_key(tmp_path):
    def errors(*overrides):
        with pytest.raises(ConfigError) as info:
            load_config(["+stage=demo_ti2v", f"run.dir={tmp_path}", *overrides])
        return str(info.value)

    assert "ti2v.i2v=-0.5: must be >= 0" in errors("ti2v.i2v=-0.5")
    assert "must sum to > 0" in errors("ti2v.i2v=0", "ti2v.interpolation=0", "ti2v.v2v=0")
    assert "ti2v.v2v_frames=16: must be < the 16 frames of data.buckets[0]" in errors("ti2v.v2v_frames=16")
    assert "data.buckets[1].frames=1" in errors("data.buckets=[{frames: 16, height: 64, width: 64},"
                                                "{frames: 1, height: 64, width: 64}]")
    assert "model.lora_rank=4" in errors("model.lora_rank=4")
    assert "validation.every_steps=5" in errors("validation.every_steps=5")


def test_ti2v_training_from_a_t2v_checkpoint_starts_exactly_at_it(tmp_path):
    torch.manual_seed(0)
    t2v = AllegroDiT(dit_config("allegro-debug"))
    t2v.save_pretrained(tmp_path / "t2v")
    cfg = load_config(["+stage=demo_ti2v", f"run.dir={tmp_path}", f"model.pretrained={tmp_path / 't2v'}"])
    model = build_dit(cfg.model, ti2v=True)
    assert isinstance(model, AllegroTI2VDiT)
    x, t, text = torch.randn(2, 4, *GRID), torch.tensor([3, 700]), torch.randn(2, 5, 32)
    with torch.no_grad():
        assert torch.equal(model(with_condition(x, torch.randn(2, 8, *GRID)), t, text), t2v(x, t, text))
    model.save_pretrained(tmp_path / "ti2v")
    with pytest.raises(ConfigError, match="is a TI2V transformer: set ti2v.enabled=true"):
        build_dit(load_config(["+stage=demo", f"model.pretrained={tmp_path / 'ti2v'}"]).model)


def condition_losses(model: AllegroTI2VDiT, cfg) -> tuple[float, float]:
    """Mean denoising loss of first-frame-conditioned clips with their own condition and with another
    clip's, on the same noise and timesteps; the empty caption, so only the condition tells clips apart."""
    data = SyntheticLatents(GRID, 4, cfg.data.text_len, 32, seed=cfg.run.seed)
    batch = data.batch(10_000, 64)  # unseen noise draws of the training clips
    condition = Conditioner(1, 0, 0)({"bucket": (FRAMES, 64, 64)}, batch["latents"], None, torch.Generator())
    null_mask = torch.zeros_like(batch["text_mask"])
    null_mask[:, 0] = 1
    objective = build_objective(cfg.diffusion, 64)
    losses = []
    for shuffle in (False, True):
        cond = torch.roll(condition, 1, dims=0) if shuffle else condition
        total = 0.0
        for seed in range(4):
            with torch.no_grad():
                out = objective.loss(lambda x, t, c: model(with_condition(x, c), t, torch.zeros_like(batch["text_states"]),
                                                           null_mask), batch["latents"], {"c": cond},
                                     torch.Generator().manual_seed(seed))
            total += out.loss.item() / 4
        losses.append(total)
    return losses[0], losses[1]


@pytest.mark.slow
def test_demo_ti2v_learns_to_use_the_condition(tmp_path):
    cfg = load_config(["+stage=demo_ti2v", f"run.dir={tmp_path}", "logging.wandb_mode=disabled",
                       "train.max_steps=60", "checkpoint.every_steps=1000"])
    torch.manual_seed(cfg.run.seed)
    untrained = build_dit(cfg.model, ti2v=True).eval()
    own, other = condition_losses(untrained, cfg)
    assert own == other  # zero condition Linears: the untrained model ignores the condition exactly

    summary = train(cfg)
    assert summary["last_loss"] < 0.5 * summary["first_loss"]
    trained = AllegroTI2VDiT.from_pretrained(tmp_path / "final" / "transformer").eval()
    own, other = condition_losses(trained, cfg)
    # the clip's own first frame explains its latents better than another clip's (measured: 0.151 vs 0.169)
    assert own < 0.95 * other, (own, other)


def test_raw_clip_ti2v_run_encodes_masked_clips_in_the_trainer(tmp_path, tiny_t5):
    """data.precomputed=false: the trainer's frozen VAE encodes each masked clip (the released input)."""
    sys.path.insert(0, str(REPO / "tests" / "data"))
    from shardgen import video_sample, write_shard

    from allegro_train.models.vae import VideoVAE, vae_config

    VideoVAE(vae_config("allegro-vae-debug")).save_pretrained(tmp_path / "vae")
    write_shard(tmp_path / "raw-0.tar", [video_sample(f"clip_{i}", FRAMES, 64, 64, "a red square moves right")
                                         for i in range(4)])
    cfg = load_config(["+stage=demo_ti2v", f"run.dir={tmp_path / 'run'}", "logging.wandb_mode=disabled",
                       "data=shards", f"data.shards=['{tmp_path}/raw-0.tar']", "data.precomputed=false",
                       "data.decode_backend=pyav", "data.num_workers=0", "data.batch_size=2",
                       f"data.buckets=[{{frames: {FRAMES}, height: 64, width: 64}}]",
                       f"model.vae_pretrained={tmp_path / 'vae'}", f"model.text_encoder_pretrained={tiny_t5}",
                       "model=allegro_debug", "parallel=single", "parallel.precision=fp32", "train.max_steps=2"])
    summary = train(cfg)
    assert summary["steps"] == 2 and all(torch.isfinite(torch.tensor(summary["losses"])))
    assert isinstance(AllegroTI2VDiT.from_pretrained(tmp_path / "run" / "final" / "transformer"), AllegroTI2VDiT)
