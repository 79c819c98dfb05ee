"""TI2V sampling: a converted T2V model samples what the T2V model did, a trained one keeps its
conditioning frame, and launch/sample.py's image= / video= / windows= keys."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from allegro_train.diffusion import DiffusionObjective
from allegro_train.models.dit import AllegroDiT, AllegroTI2VDiT, dit_config, ti2v_from_t2v
from allegro_train.models.text import T5TextEncoder
from allegro_train.models.vae import VideoVAE, vae_config
from allegro_train.sampling import Condition, Sampler, build_scheduler, export_pipeline
from allegro_train.sampling.command import run_sample
from allegro_train.sampling.config import SampleConfigError, load_sample_config
from allegro_train.sampling.sampler import to_uint8
from allegro_train.training.conditioning import Conditioner, with_condition

pytest.importorskip("diffusers")  # the schedulers

T, H, W = 8, 32, 32  # a 2 x 4 x 4 latent grid
PROMPT = "a red square moves right"


def _image(seed: int, height: int = 48, width: int = 40) -> np.ndarray:
    """A smooth random colour field, uint8 [H, W, 3] (another size than the clip's: it is resized)."""
    coarse = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return to_uint8(F.interpolate(coarse, size=(height, width), mode="bilinear")[:, :, None] * 2 - 1)[0, 0]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, tiny_t5: Path, perturb) -> tuple[Path, Path]:
    """(T2V pipeline folder, the same with its transformer converted to TI2V)."""
    root = tmp_path_factory.mktemp("ti2v_pipelines")
    torch.manual_seed(0)
    perturb(AllegroDiT(dit_config("allegro-debug")), 1).save_pretrained(root / "run" / "final" / "transformer")
    perturb(VideoVAE(vae_config("allegro-vae-debug")), 2).save_pretrained(root / "vae")
    (root / "run" / "config.yaml").write_text(
        f"model:\n  vae_pretrained: {root / 'vae'}\n  text_encoder_pretrained: {tiny_t5}\n")
    t2v = export_pipeline(root / "run", root / "t2v")
    ti2v = root / "ti2v"
    shutil.copytree(t2v, ti2v)
    shutil.rmtree(ti2v / "transformer")
    ti2v_from_t2v(AllegroDiT.from_pretrained(t2v / "transformer")).save_pretrained(ti2v / "transformer")
    return t2v, ti2v


def test_converted_model_samples_exactly_what_t2v_did(pipelines):
    """Zero condition Linears: with a deterministic scheduler the conditioned TI2V frames are the T2V ones."""
    t2v, ti2v = pipelines
    kwargs = dict(num_frames=T, height=H, width=W, steps=3, guidance=4.0, seed=3, clean_caption=False)
    expected = Sampler.from_pretrained(t2v, scheduler="dpm_solver++").sample([PROMPT], **kwargs)
    sampler = Sampler.from_pretrained(ti2v, scheduler="dpm_solver++")
    assert isinstance(sampler.transformer, AllegroTI2VDiT)
    got = sampler.sample([PROMPT], condition=Condition.from_images(_image(0), _image(1)), **kwargs)
    assert np.array_equal(got, expected) and expected.std() > 5

    with pytest.raises(ValueError, match="a TI2V transformer needs a condition"):
        sampler.sample([PROMPT], **kwargs)
    with pytest.raises(ValueError, match="needs a TI2V transformer"):
        Sampler.from_pretrained(t2v).sample([PROMPT], condition=Condition.from_images(_image(0)), **kwargs)


def test_condition_is_encoded_as_the_released_pipeline_does(pipelines):
    sampler = Sampler.from_pretrained(pipelines[1])
    first, last = _image(0), _image(1)
    condition = sampler.encode_condition(Condition.from_images(first, last), T, H, W, 2,
                                         torch.Generator().manual_seed(5))
    assert condition.shape == (2, 8, 2, 4, 4)
    video = torch.zeros(2, 3, T, H, W)  # the given frames at 0 and T-1, 0 (mid-grey) elsewhere, per sample
    for index, image in ((0, first), (T - 1, last)):
        video[:, :, index] = Condition.from_images(image).pixels(1, H, W)[0][:, 0]
    with torch.no_grad():
        masked = sampler.vae.encode(video).sample(torch.Generator().manual_seed(5)) * sampler.vae.scaling_factor
    assert torch.equal(condition[:, :4], masked) and not torch.equal(masked[0], masked[1])  # a draw per sample
    mask = condition[0, 4:]  # frame 0 -> channel 0, latent 0; frame 7 -> channel 3, latent 1
    assert mask[0, 0].max() == 0 and mask[3, 1].max() == 0 and mask.sum() == 6 * 16


class _VAEInputs:
    """training/inputs.py's encode_video over a given VAE: the trainer's raw-clip conditioning path."""

    def __init__(self, vae: VideoVAE):
        self.vae = vae

    @torch.no_grad()
    def encode_video(self, video, generator):
        return self.vae.encode(video).sample(generator) * self.vae.scaling_factor


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.mark.slow
def test_sampling_keeps_the_conditioning_frame(tiny_t5: Path, perturb):
    """Train the debug TI2V DiT on four still clips (first-frame task, the trainer's raw-clip
    conditioning), then sample from each clip's first frame with the released mechanism (no latent
    replacement). The first decoded frame is compared with the VAE's own reconstruction of the clip
    (the best any DiT can do through this random VAE) and with the other clips' reconstructions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is faster, and the bound is measured with it
    try:
        torch.manual_seed(0)
        vae = perturb(VideoVAE(vae_config("allegro-vae-debug")), 2).eval()
        with torch.no_grad():  # a sharp posterior, as a trained VAE has (std e^-10 instead of ~1)
            vae.quant_conv.weight[4:] = 0
            vae.quant_conv.bias[4:] = -20.0
        images = [_image(seed, H, W) for seed in range(4)]
        clips = torch.stack([Condition.from_images(image).pixels(1, H, W)[0] for image in images])  # [4, 3, 1, H, W]
        clips = clips.expand(-1, -1, T, -1, -1)  # still clips
        with torch.no_grad():  # unit-std latents: what a VAE's scaling factor is chosen for
            scale = float(1 / vae.encode(clips).mode().std())
        vae.config = dataclasses.replace(vae.config, scaling_factor=scale)
        inputs, generator = _VAEInputs(vae), torch.Generator().manual_seed(0)
        latents = inputs.encode_video(clips, generator)  # [4, 4, 2, 4, 4]
        condition = Conditioner(1, 0, 0)({"bucket": (T, H, W), "video": clips}, latents, inputs, generator)
        text = T5TextEncoder.from_pretrained(tiny_t5, dtype=torch.float32)
        states, mask = text.encode([PROMPT])

        model = AllegroTI2VDiT(dit_config("allegro-debug"))
        model.init_weights()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        objective = DiffusionObjective()
        for _ in range(600):
            pick = torch.randint(0, 4, (8,), generator=generator)
            out = objective.loss(lambda x, t, c: model(with_condition(x, c), t, states.expand(8, -1, -1),
                                                       mask.expand(8, -1)), latents[pick], {"c": condition[pick]},
                                 generator)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()

        sampler = Sampler(model.eval(), vae, text, build_scheduler("dpm_solver++", None))
        with torch.no_grad():
            reconstructions = to_uint8(vae.decode(latents / scale))[:, 0]  # [4, H, W, 3], frame 0
        for i, image in enumerate(images):
            frame = sampler.sample([PROMPT], num_frames=T, height=H, width=W, steps=20, guidance=1.0, seed=i,
                                   clean_caption=False, condition=Condition.from_images(image))[0, 0]
            own = _psnr(frame, reconstructions[i])
            others = max(_psnr(frame, reconstructions[j]) for j in range(4) if j != i)
            # measured: own 17.7-23.0 dB, others <= 13.8 dB (reconstructions of different clips are 12.6-13.9 dB apart)
            assert own > 16.0 and own > others + 3.0, (i, own, others)
    finally:
        torch.set_num_threads(threads)


def _write_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(image).save(path)
    return path


def test_command_line_image_video_and_windows(pipelines, tmp_path):
    t2v, ti2v = pipelines
    first, last = _write_png(tmp_path / "first.png", _image(0)), _write_png(tmp_path / "last.png", _image(1))
    base = [f"checkpoint={ti2v}", f"prompt={PROMPT}", "steps=2", "device=cpu", "dtype=fp32", "clean_caption=false",
            f"num_frames={T}", f"height={H}", f"width={W}"]

    out = tmp_path / "i2v.npy"
    assert run_sample(load_sample_config([*base, f"image={first}", f"last_image={last}", f"out={out}"])) == [out]
    clip = np.load(out)
    assert clip.shape == (T, H, W, 3)

    # continue that clip from its last 4 frames for two windows: 8 + (8 - 4) + (8 - 4) frames
    np.save(tmp_path / "clip.npy", clip)
    from allegro_train.sampling.video import write_video

    write_video(clip, tmp_path / "clip.mp4")
    out = tmp_path / "long.npy"
    run_sample(load_sample_config([*base, f"video={tmp_path / 'clip.mp4'}", "context_frames=4", "windows=3",
                                   f"out={out}"]))
    assert np.load(out).shape == (T + 2 * (T - 4), H, W, 3)

    def error(*overrides) -> str:
        with pytest.raises(SampleConfigError) as info:
            run_sample(load_sample_config([*base, f"out={tmp_path / 'x.npy'}", *overrides]))
        return str(info.value)

    assert "give image= or video=, not both" in error(f"image={first}", f"video={tmp_path / 'clip.mp4'}")
    assert "last_image=" in error(f"last_image={last}")
    assert "context_frames=8: must be in [1, num_frames=8)" in error(f"image={first}", "context_frames=8", "windows=2")
    assert "image='nope.png': is not a file" in error("image=nope.png")
    assert "a TI2V transformer; give image=" in error()
    assert "is a T2V transformer" in error(f"checkpoint={t2v}", f"image={first}")
    index = json.loads((ti2v / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "AllegroTransformer3DModel"]  # copied from the T2V export
    assert json.loads(Path(export_pipeline(ti2v, tmp_path / "export") / "model_index.json").read_text())[
        "transformer"] == ["diffusers", "AllegroTransformerTI2V3DModel"]
