"""data_recipes/precompute.py end to end: raw shards -> precomputed shards the loader trains on.

Lives beside shardgen (the raw-shard helpers); the tiny T5 comes from tests/conftest.py.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from allegro_train.data import build_loader
from allegro_train.models.text import T5TextEncoder
from allegro_train.models.vae import VideoVAE, vae_config
from data_recipes import precompute
from data_recipes.encode_shards import output_names, run
from data_recipes.precompute_config import PrecomputeConfigError, load_config
from shardgen import data_config, image_sample, video_sample, write_shard

BUCKETS = [(8, 32, 32), (1, 32, 32)]
BUCKETS_ARG = "buckets=[" + ",".join(f"{{frames:{f},height:{h},width:{w}}}" for f, h, w in BUCKETS) + "]"
# key -> caption of the samples that are written; clips have exactly 8 frames, so the window is fixed.
WRITTEN = {"a_0": "a red cat runs across the field.", "a_1": "a blue dog walks across the street.",
           "b_0": "a small square.", "b_1": "A Dark <b>Horse</b> jumps!  "}


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vae")
    VideoVAE(vae_config("allegro-vae-debug")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def raw_shards(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("raw")
    write_shard(root / "a.tar", [video_sample("a_0", 8, 32, 32, WRITTEN["a_0"]),
                                 video_sample("a_1", 8, 48, 64, WRITTEN["a_1"]),
                                 video_sample("a_2", 8, 32, 32, caption=None),  # uncaptioned: skipped
                                 video_sample("a_3", 3, 32, 32, "a cat.")])  # shorter than every bucket
    write_shard(root / "b.tar", [image_sample("b_0", 40, 40, WRITTEN["b_0"]),
                                 video_sample("b_1", 8, 32, 32, WRITTEN["b_1"])])
    return str(root / "{a,b}.tar")


@pytest.fixture(scope="module")
def precomputed(tmp_path_factory, raw_shards, tiny_vae, tiny_t5):
    """The Hydra CLI's ``main``, run once on a command line; returns (output dir, overrides for in-process reruns)."""
    out = tmp_path_factory.mktemp("pre")
    # The pattern is quoted: braces are Hydra syntax.
    overrides = [f"shards='{raw_shards}'", f"output_dir={out}", f"vae={tiny_vae}", f"text_encoder={tiny_t5}",
                 BUCKETS_ARG, "device=cpu", "text_dtype=fp32", "decode_backend=pyav"]
    with pytest.MonkeyPatch.context() as patch:  # in-process: a subprocess re-imports torch + transformers
        patch.setattr(sys, "argv", ["data_recipes/precompute.py", *overrides])
        precompute.main()
    return out, overrides


def read_tars(out: Path) -> dict[str, dict]:
    samples = {}
    for tar in sorted(out.glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            samples[sample["__key__"]] = sample
    return samples


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_summary_counts_and_files(precomputed):
    out, _ = precomputed
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["shards_in"], summary["shards_done"], summary["pending"]) == (2, 2, [])
    assert (summary["samples_in"], summary["samples_written"]) == (6, 4)
    assert summary["skipped"] == {"no_caption": 1, "too_short": 1}
    assert summary["buckets"] == {"8x32x32": 3, "1x32x32": 1}
    assert sorted(p.name for p in out.iterdir() if p.name != "hydra") == [
        "a.stats.json", "a.tar", "b.stats.json", "b.tar", "null.t5.npy", "settings.json", "summary.json"]


def test_stored_arrays_equal_the_encoders(precomputed, raw_shards, tiny_vae, tiny_t5):
    out, _ = precomputed
    stored = read_tars(out)
    assert set(stored) == set(WRITTEN)
    vae = VideoVAE.from_pretrained(tiny_vae).eval()
    text = T5TextEncoder.from_pretrained(tiny_t5, dtype=torch.float32)
    # The same decoded clips, from the loader's online path.
    cfg = data_config(raw_shards, buckets=BUCKETS, precomputed=False, epochs=1, batch_size=1, decode_backend="pyav")
    videos = {batch["keys"][0]: batch["video"] for batch in build_loader(cfg)}
    for key, caption in WRITTEN.items():
        meta = json.loads(stored[key]["json"])
        assert meta["caption"] == caption and meta["bucket"] == list(videos[key].shape[2:])
        video = videos[key]  # [1, 3, F, H, W]
        if video.shape[2] == 1:  # an image: a still 4-frame clip
            video = video.expand(-1, -1, 4, -1, -1)
        with torch.no_grad():
            posterior = vae.encode(video)
        moments = npy(stored[key]["latent.npy"])
        assert moments.dtype == np.float16 and moments.shape == (8, *posterior.mean.shape[2:])
        torch.testing.assert_close(torch.from_numpy(moments[:4]).float(), posterior.mean[0], rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(torch.from_numpy(moments[4:]).float(), posterior.logvar[0], rtol=2e-3, atol=2e-3)
        states, mask = text.encode([caption], clean=True)  # caption_text=clean, the default
        t5 = npy(stored[key]["t5.npy"])
        assert t5.dtype == np.float16 and t5.shape == (int(mask.sum()), 32)
        torch.testing.assert_close(torch.from_numpy(t5).float(), states[0], rtol=2e-3, atol=2e-3)
    null_states, _ = text.encode([""])
    null = np.load(out / "null.t5.npy")
    assert null.shape == (1, 32)
    torch.testing.assert_close(torch.from_numpy(null).float(), null_states[0], rtol=2e-3, atol=2e-3)


def test_the_loader_trains_on_the_output(precomputed):
    out, _ = precomputed
    cfg = data_config(str(out / "{a,b}.tar"), buckets=BUCKETS, precomputed=True, epochs=1, batch_size=1,
                      null_caption=str(out / "null.t5.npy"))
    batches = list(build_loader(cfg))
    assert sorted(b["keys"][0] for b in batches) == sorted(WRITTEN)
    for batch in batches:
        frames = 2 if batch["bucket"][0] == 8 else 1
        assert batch["latents"].shape == (1, 4, frames, 4, 4)
        assert batch["text_states"].shape[::2] == (1, 32) and batch["text_mask"].all()


def test_rerun_skips_finished_shards_and_refuses_changed_settings(precomputed):
    out, overrides = precomputed
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    (out / ".a.tar.tmp-1").write_bytes(b"left by a killed run")
    summary = run(load_config(overrides))
    assert summary["shards_converted_this_run"] == 0 and summary["samples_written"] == 4
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    with pytest.raises(PrecomputeConfigError, match=r"changed: max_length=77 \(was 512\)"):
        run(load_config([*overrides, "max_length=77"]))


def test_config_errors_name_the_key(tmp_path, tiny_t5):
    with pytest.raises(PrecomputeConfigError, match="vae="):
        load_config(["shards=x.tar", f"output_dir={tmp_path}", f"vae={tmp_path / 'none'}", f"text_encoder={tiny_t5}",
                     BUCKETS_ARG, "device=cpu"])
    with pytest.raises(PrecomputeConfigError, match="output_dir"):
        load_config(["shards=x.tar"])
    with pytest.raises(PrecomputeConfigError, match="would both write x.tar"):
        output_names(["/a/x.tar", "/b/x.tar"])
