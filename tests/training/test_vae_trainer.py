"""VideoVAE training in one process (DeepSpeed over a gloo group of one) on raw clips the tests write:
ffmpeg testsrc clips and smooth PNG images, 16 x 16 pixels, with the ``allegro-vae-debug`` size."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from allegro_train.config import ConfigError, load_vae_config
from allegro_train.models.vae import VideoVAE, vae_config
from allegro_train.models.vae.discriminator import PatchDiscriminator3D
from allegro_train.training.vae_loss import LastLayerGrad, VAELoss, hinge_d_loss
from allegro_train.training.vae_trainer import train_vae
from allegro_train.training.video_quality import psnr, ssim

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "data"))
from shardgen import video_sample, write_shard  # noqa: E402

SIZE = 16


def smooth_image_sample(key: str, seed: int) -> dict:
    """A PNG of two soft colour gradients (noise would be incompressible, so unlearnable)."""
    from PIL import Image

    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    rgb = np.stack([np.sin(2 * np.pi * (x + y) / 2 + p) for p in phase], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8)).save(buf, format="PNG")
    meta = {"caption": "gradient", "num_frames": 1, "height": SIZE, "width": SIZE}
    return {"__key__": key, "json": json.dumps(meta).encode(), "png": buf.getvalue()}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """train-{0,1}.tar: 4 clips (8 frames) + 2 images each; val.tar: 2 clips + 1 image, held out."""
    root = tmp_path_factory.mktemp("vae_shards")
    for s in range(2):
        write_shard(root / f"train-{s}.tar", [video_sample(f"c{s}_{i}", 8, SIZE, SIZE) for i in range(4)]
                    + [smooth_image_sample(f"i{s}_{i}", 10 * s + i) for i in range(2)])
    write_shard(root / "val.tar", [video_sample(f"v{i}", 8, SIZE, SIZE) for i in range(2)]
                + [smooth_image_sample("v_img", 99)])
    return root


def overrides(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["+stage=vae_pretrain", f"data.shards=['{shards}/train-{{0..1}}.tar']", f"run.dir={run_dir}",
            "vae.name=allegro-vae-debug", "vae.trainable=all", "loss.lpips=0", "parallel=single",
            "parallel.precision=fp32", "data.decode_backend=pyav", "data.num_workers=0", "data.batch_size=2",
            f"data.buckets=[{{frames: 4, height: {SIZE}, width: {SIZE}}}, {{frames: 1, height: {SIZE}, width: {SIZE}}}]",
            "data.image_fraction=0.25", "optim.lr=2e-3", "logging.every_steps=1", "logging.wandb_mode=disabled", *extra]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_lowers_the_loss_raises_psnr_and_exports_a_diffusers_vae(shards, tmp_path):
    run = tmp_path / "run"
    cfg = load_vae_config(overrides(shards, run, "train.max_steps=40", "validation.every_steps=20",
                                    f"validation.shards=['{shards}/val.tar']", "validation.num_clips=3",
                                    "logging.wandb_mode=offline"))
    summary = train_vae(cfg)
    assert summary["steps"] == 40 and len(summary["losses"]) == 40
    assert summary["last_loss"] < 0.7 * summary["first_loss"]  # L1 + 1e-6 KL of the training batches
    logged = records(run)
    val = {r["step"]: r for r in logged if "val/psnr" in r}
    assert sorted(val) == [0, 20, 40]  # the untrained start, then every 20 steps
    assert val[40]["val/psnr"] > val[0]["val/psnr"] + 3  # dB, on the held-out clips
    assert val[40]["val/ssim"] > val[0]["val/ssim"]
    assert summary["psnr"] == val[40]["val/psnr"] and summary["ssim"] == val[40]["val/ssim"]
    steps = [r for r in logged if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert steps[-1]["data/bucket/4x16x16"] > 0 and steps[-1]["data/bucket/1x16x16"] > 0  # clips and images

    import av

    with av.open(str(run / "reconstructions" / "step_000000040" / "00.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (SIZE, 2 * SIZE, 3)  # input | reconstruction
    media = list((run / "wandb").glob("offline-run-*/files/media/videos/reconstructions_*.mp4"))
    assert len(media) == 3 * 2  # three validations, validation.num_videos=2 each

    assert summary["vae"] == str(run / "final" / "vae") and not (run / "final" / "vae.tmp").exists()
    ours = VideoVAE.from_pretrained(summary["vae"]).state_dict()
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.AutoencoderKLAllegro.from_pretrained(summary["vae"]).state_dict()
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)
    torch.manual_seed(0)  # the trainer's seed: the initial weights
    start = VideoVAE(vae_config("allegro-vae-debug"))
    assert not torch.equal(ours["decoder.conv_out.weight"], start.state_dict()["decoder.conv_out.weight"])


@pytest.mark.slow
def test_resume_with_the_discriminator_equals_an_uninterrupted_run(shards, tmp_path):
    """Stop at step 3, relaunch (a new process) to 5: the losses and weights of one 5-step run, bitwise.
    The discriminator joins after step 1, so its weights and Adam moments must come back too."""
    gan = ("discriminator.enabled=true", "discriminator.start_step=1", "discriminator.channels=8",
           "discriminator.layers=2", "checkpoint.every_steps=100")
    whole = train_vae(load_vae_config(overrides(shards, tmp_path / "whole", "train.max_steps=5", *gan)))

    def launch(steps: int) -> None:
        cmd = [sys.executable, str(REPO / "launch" / "train_vae.py"),
               *overrides(shards, tmp_path / "split", f"train.max_steps={steps}", *gan)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    launch(3)
    replicated = torch.load(tmp_path / "split" / "checkpoints" / "step_000000003" / "replicated.pt", weights_only=True)
    assert replicated["optimizer"]["state"]  # the discriminator had taken steps 2 and 3
    launch(5)

    split = records(tmp_path / "split")
    assert [r["loss"] for r in split] == whole["losses"]
    assert "g_loss" not in split[0] and all("g_loss" in r and "d_loss" in r for r in split[1:])  # from step 2
    assert all(r["adaptive_weight"] > 0 for r in split[1:]) and split[0]["d_grad_norm"] is None
    a = load_file(tmp_path / "whole" / "final" / "vae" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "split" / "final" / "vae" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_temporal_only_training_keeps_the_2d_weights_exactly_under_bf16(shards, tmp_path):
    torch.manual_seed(7)
    source = VideoVAE(vae_config("allegro-vae-debug"))
    source.save_pretrained(tmp_path / "source")
    cfg = load_vae_config(overrides(shards, tmp_path / "run", "train.max_steps=2", "vae.trainable=temporal",
                                    f"vae.pretrained={tmp_path / 'source'}", "parallel=zero2",
                                    "parallel.precision=bf16"))
    trained = VideoVAE.from_pretrained(train_vae(cfg)["vae"]).state_dict()
    before = source.state_dict()
    spatial = [k for k in before if "temp_conv" not in k]
    assert all(torch.equal(trained[k], before[k]) for k in spatial)  # not their bf16 copies
    changed = [k for k in before if "temp_conv" in k and not torch.equal(trained[k], before[k])]
    assert changed
    # the export is the fp32 master copy: some trained values are not bf16 numbers
    assert any(not torch.equal(trained[k], trained[k].bfloat16().float()) for k in changed)


def test_lpips_without_local_weights_fails_before_any_model_is_built(shards, tmp_path):
    with pytest.raises(ConfigError, match="loss.lpips_path=None: loss.lpips=1.0 needs local LPIPS weights"):
        load_vae_config(overrides(shards, tmp_path, "loss.lpips=1.0"))
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(ConfigError, match=f"loss.lpips_path='{missing}': no such file"):
        load_vae_config(overrides(shards, tmp_path, "loss.lpips=1.0", f"loss.lpips_path={missing}"))
    with pytest.raises(ConfigError, match="vae.trainable='temporal': freezes the 2D layers"):
        load_vae_config(overrides(shards, tmp_path, "vae.trainable=temporal"))

    cmd = [sys.executable, str(REPO / "launch" / "train_vae.py"),
           *overrides(shards, tmp_path / "run", "loss.lpips=0.5", f"loss.lpips_path={missing}")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode != 0 and "loss.lpips_path" in done.stderr
    assert "training the VideoVAE" not in done.stdout + done.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()  # (Hydra made only its own run.dir/hydra/)


@pytest.mark.parametrize("trainable", ["all", "temporal"])
def test_adaptive_weight_is_the_gradient_ratio_at_the_decoders_last_layer(trainable):
    torch.manual_seed(0)
    vae = VideoVAE(vae_config("allegro-vae-debug"))
    for name, param in vae.named_parameters():
        param.requires_grad_(trainable == "all" or "temp_conv" in name)
    torch.nn.init.normal_(vae.decoder.temp_conv_out.weight, std=0.05)  # not at identity: a real path
    disc = PatchDiscriminator3D(channels=8, layers=2).requires_grad_(False)
    cfg = load_vae_config(["data.shards=[x.tar]", "discriminator.enabled=true"])
    loss_fn = VAELoss(cfg.loss, cfg.discriminator, lpips=None, discriminator=disc)
    probe = LastLayerGrad(vae)

    video = torch.rand(2, 3, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    recon, posterior = vae(video, generator=torch.Generator().manual_seed(2))
    loss, terms = loss_fn.generator(video, recon, posterior, gan_on=True, last_layer_grad=probe)

    # taming's calculate_adaptive_weight, by autograd through the whole graph
    layer = vae.decoder.conv_out.weight if trainable == "all" else vae.decoder.temp_conv_out.weight
    nll = (video - recon).abs().mean()
    g_loss = -disc(recon).mean()
    nll_grad, = torch.autograd.grad(nll, layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, layer, retain_graph=True)
    expected = (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4)
    torch.testing.assert_close(terms["adaptive_weight"], expected, rtol=1e-5, atol=0)
    kl = posterior.kl().mean() / video[0].numel()
    torch.testing.assert_close(loss, nll + 1e-6 * kl + 0.5 * expected * g_loss, rtol=1e-5, atol=1e-7)

    loss_fn.max_adaptive = 1e-3  # the clamp
    _, clamped = loss_fn.generator(video, recon, posterior, gan_on=True, last_layer_grad=probe)
    assert float(clamped["adaptive_weight"]) == pytest.approx(1e-3)


def test_hinge_loss_discriminator_shape_and_still_image_clips():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([-2.0, 0.5])
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * ((0 + 2) / 2 + (0 + 1.5) / 2))
    logits = PatchDiscriminator3D(channels=8, layers=3)(torch.zeros(2, 3, 4, 32, 32))
    assert logits.shape == (2, 1, 4, 2, 2)  # time kept; 32 -> 16 -> 8 -> 4 -> 3 -> 2
    vae = VideoVAE(vae_config("allegro-vae-debug"))
    image = torch.rand(2, 3, 1, SIZE, SIZE)
    clip = vae.as_clip(image)
    assert clip.shape == (2, 3, 4, SIZE, SIZE) and all(torch.equal(clip[:, :, t], image[:, :, 0]) for t in range(4))
    video = torch.rand(1, 3, 8, SIZE, SIZE)
    assert vae.as_clip(video) is video


def test_psnr_and_ssim_known_values():
    zeros = torch.zeros(1, 3, 2, 16, 16)
    assert float(psnr(zeros, zeros + 0.1)) == pytest.approx(10 * math.log10(4 / 0.01))  # range 2, MSE 0.01
    # constant images: no variance, so SSIM is its luminance term (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.2, -0.4, (0.01 * 2) ** 2
    assert float(ssim(zeros + a, zeros + b)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)
    # textured frames: skimage 0.26 structural_similarity(gaussian_weights=True, sigma=1.5,
    # use_sample_covariance=False, data_range=2, channel_axis=-1), averaged over the two frames
    c, t, h, w = torch.meshgrid(torch.arange(3.), torch.arange(2.), torch.arange(24.), torch.arange(20.), indexing="ij")
    x = 0.8 * torch.sin(0.3 * h + 0.5 * c + 0.2 * t) * torch.cos(0.23 * w)
    y = (x + 0.3 * torch.cos(0.07 * h * w + c)).clamp(-1, 1)
    assert float(ssim(x[None], y[None])) == pytest.approx(0.46147078, abs=1e-7)
    assert float(ssim(x[None], x[None])) == pytest.approx(1.0)
