"""Sampling and export: our Sampler and launch/sample.py against diffusers' AllegroPipeline, same weights.

A tiny pipeline (tiny T5 + offline sentencepiece tokenizer, allegro-debug DiT, allegro-vae-debug
VAE) is exported once; both sides then sample 8 x 32 x 32 pixels (a 2 x 4 x 4 latent grid) in
3 Euler-ancestral steps with CFG from one seed, and the uint8 frames must agree to one level.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import perturbed

from allegro_train.models.dit import AllegroDiT, dit_config
from allegro_train.models.vae import VideoVAE, vae_config
from allegro_train.sampling import Sampler, export_pipeline, resolve_components
from allegro_train.sampling.command import run_sample
from allegro_train.sampling.config import SampleConfigError, load_sample_config
from allegro_train.sampling.prompts import read_prompts

diffusers = pytest.importorskip("diffusers")

REPO = Path(__file__).resolve().parents[2]
SIZE = dict(num_frames=8, height=32, width=32)
PROMPT, NEGATIVE, SEED, STEPS, GUIDANCE = "A red cat runs across the field.", "a dark square", 3, 3, 4.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_t5: Path) -> Path:
    """A training run's layout: final/transformer/ + config.yaml naming the frozen VAE and T5."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    perturbed(AllegroDiT(dit_config("allegro-debug")), 1).save_pretrained(root / "final" / "transformer")
    perturbed(VideoVAE(vae_config("allegro-vae-debug")), 2).save_pretrained(root / "frozen_vae")
    (root / "config.yaml").write_text(
        f"model:\n  vae_pretrained: {root / 'frozen_vae'}\n  text_encoder_pretrained: {tiny_t5}\n")
    return root


@pytest.fixture(scope="module")
def pipeline_dir(run_dir: Path, tmp_path_factory) -> Path:
    return export_pipeline(run_dir, tmp_path_factory.mktemp("export") / "pipeline")


def _diffusers_frames(pipeline_dir: Path) -> np.ndarray:
    """uint8 [T, H, W, 3] from diffusers' own pipeline, its own uint8 conversion (output_type="pil")."""
    pipe = diffusers.AllegroPipeline.from_pretrained(pipeline_dir, torch_dtype=torch.float32)
    # diffusers' VAE only decodes tiled, and its default tile (24 x sample_size^2, overlap 8 x 120 x 80)
    # is larger than this clip, which it would return as zeros: one tile of exactly the clip's size.
    pipe.vae.enable_tiling()
    pipe.vae.kernel = pipe.vae.stride = (SIZE["num_frames"], SIZE["height"], SIZE["width"])
    out = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               generator=torch.Generator("cpu").manual_seed(SEED), output_type="pil", clean_caption=False,
               max_sequence_length=512, **SIZE)
    return np.stack([np.asarray(frame) for frame in out.frames[0]])


def test_export_loads_in_diffusers_and_matches_our_sampling(run_dir: Path, pipeline_dir: Path, tmp_path: Path):
    index = json.loads((pipeline_dir / "model_index.json").read_text())
    assert index["_class_name"] == "AllegroPipeline"
    assert index["transformer"] == ["diffusers", "AllegroTransformer3DModel"]
    assert not list(pipeline_dir.parent.glob(".pipeline.tmp-*"))  # the temporary folder is gone

    reference = _diffusers_frames(pipeline_dir)
    assert reference.shape == (8, 32, 32, 3) and reference.std() > 5  # a real video, not zeros

    ours = Sampler.from_pretrained(pipeline_dir).sample(
        [PROMPT], NEGATIVE, steps=STEPS, guidance=GUIDANCE, seed=SEED, clean_caption=False, **SIZE)
    assert ours.shape == (1, 8, 32, 32, 3) and ours.dtype == np.uint8
    diff = np.abs(ours[0].astype(int) - reference.astype(int))
    assert diff.max() <= 1, f"max uint8 difference {diff.max()}"

    # The command line's path (config -> run_sample), from the run dir: transformer from the run,
    # VAE and T5 from its config.yaml. Same seed and scheduler, so the same frames.
    out = tmp_path / "video.npy"
    cfg = load_sample_config([f"checkpoint={run_dir}", f"prompt={PROMPT}",
                              f"negative_prompt='{NEGATIVE}'", f"steps={STEPS}", f"guidance={GUIDANCE}",
                              f"seed={SEED}", "clean_caption=false", f"out={out}", "device=cpu", "dtype=fp32",
                              *(f"{k}={v}" for k, v in SIZE.items())])
    assert run_sample(cfg) == [out]
    launched = np.load(out)
    assert launched.shape == (8, 32, 32, 3) and launched.dtype == np.uint8
    assert np.abs(launched.astype(int) - reference.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def sampler(pipeline_dir: Path) -> Sampler:
    return Sampler.from_pretrained(pipeline_dir)


def test_other_scheduler_matches_diffusers(pipeline_dir: Path, sampler: Sampler):
    """DPM-Solver++ on the same schedule: ours and diffusers' pipeline with that scheduler agree."""
    pipe = diffusers.AllegroPipeline.from_pretrained(pipeline_dir)
    pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.vae.enable_tiling()
    pipe.vae.kernel = pipe.vae.stride = (SIZE["num_frames"], SIZE["height"], SIZE["width"])
    reference = pipe(PROMPT, num_inference_steps=2, guidance_scale=GUIDANCE, output_type="pil",
                     generator=torch.Generator("cpu").manual_seed(SEED), clean_caption=False, **SIZE).frames[0]
    dpm = Sampler.from_pretrained(pipeline_dir, scheduler="dpm_solver++")
    ours = dpm.sample([PROMPT], steps=2, guidance=GUIDANCE, seed=SEED, clean_caption=False, **SIZE)[0]
    assert type(dpm.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert np.abs(ours.astype(int) - np.stack([np.asarray(f) for f in reference]).astype(int)).max() <= 1


@pytest.mark.parametrize("size, named", [
    (dict(num_frames=6, height=32, width=32), "num_frames=6"),
    (dict(num_frames=8, height=40, width=32), "height=40"),
    (dict(num_frames=8, height=32, width=24), "width=24"),
])
def test_size_the_vae_or_patch_cannot_take_is_named(sampler: Sampler, size: dict, named: str):
    with pytest.raises(ValueError, match=named):
        sampler.sample([PROMPT], steps=1, **size)


def test_bad_prompts_are_named(sampler: Sampler, tmp_path: Path):
    with pytest.raises(ValueError, match="prompts"):
        sampler.sample("a bare string", steps=1, **SIZE)
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_prompts(tmp_path / "absent.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# only a comment\n  \n")
    with pytest.raises(ValueError, match="empty.txt: holds no prompt"):
        read_prompts(empty)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ValueError, match="binary.txt: not UTF-8"):
        read_prompts(binary)
    good = tmp_path / "good.txt"
    good.write_text("# header\na red cat\n\n  a blue dog  \n")
    assert read_prompts(good) == ["a red cat", "a blue dog"]


def test_missing_component_is_named(run_dir: Path, pipeline_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(pipeline_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(FileNotFoundError, match="missing vae/"):
        resolve_components(broken)
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        Sampler.from_pretrained(broken, vae=pipeline_dir)
    # A bare transformer folder: nothing names the frozen VAE / T5.
    with pytest.raises(ValueError, match="pass vae=FOLDER"):
        resolve_components(pipeline_dir / "transformer")
    with pytest.raises(ValueError, match="scheduler='euler_a'"):
        Sampler.from_pretrained(pipeline_dir, scheduler="euler_a")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_pipeline(run_dir, pipeline_dir)


def test_config_errors_name_the_key(pipeline_dir: Path):
    base = [f"checkpoint={pipeline_dir}", "device=cpu"]
    with pytest.raises(SampleConfigError, match="exactly one of prompt and prompts_file"):
        load_sample_config(base)
    with pytest.raises(SampleConfigError, match="out='video.gif'"):
        load_sample_config([*base, "prompt=x", "out=video.gif"])
    with pytest.raises(SampleConfigError, match="stepz"):
        load_sample_config([*base, "prompt=x", "stepz=3"])


def test_command_line_writes_mp4_per_prompt(pipeline_dir: Path, tmp_path: Path):
    """launch/sample.py as a user runs it: a prompts file -> one 15 fps mp4 a prompt."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cat runs\na blue dog jumps\n")
    out = tmp_path / "videos" / "clip.mp4"
    subprocess.run([sys.executable, str(REPO / "launch" / "sample.py"), f"checkpoint={pipeline_dir}",
                    f"prompts_file={prompts}", f"out={out}", "steps=1", "device=cpu", "dtype=fp32",
                    *(f"{k}={v}" for k, v in SIZE.items())],
                   check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    import av

    for name in ("clip_000.mp4", "clip_001.mp4"):
        with av.open(str(out.parent / name)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert stream.average_rate == 15
        assert len(frames) == 8 and frames[0].shape == (32, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt", "videos"]  # no Hydra outputs/
