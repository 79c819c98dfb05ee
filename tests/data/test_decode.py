"""Decoding: the three backends agree, frames are sampled and cropped per bucket, bad members are
skipped and counted, and precomputed latents are drawn deterministically from their moments."""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest
import torch

from allegro_train.config.schema import DecodeBackend
from allegro_train.data import build_loader
from allegro_train.data.decode import BadSample, decode_video, frame_indices, load_npy, resize_crop, usable_frames

from conftest import VIDEO_BUCKETS
from shardgen import LATENT_BUCKETS, data_config, latent_sample, npy, encode_testsrc, video_sample, write_shard

BACKENDS = [DecodeBackend.decord, DecodeBackend.pyav,
            pytest.param(DecodeBackend.torchcodec, marks=pytest.mark.skipif(
                importlib.util.find_spec("torchcodec") is None, reason="torchcodec is an optional install"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_decode_the_same_frames(backend):
    clip = encode_testsrc(12, 48, 64)
    reference = decode_video(clip, [0, 3, 11], DecodeBackend.pyav, "clip")
    frames = decode_video(clip, [0, 3, 11], backend, "clip")
    assert frames.shape == (3, 48, 64, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames, reference)
    assert not torch.equal(frames[0], frames[1])  # testsrc moves: distinct frames, not one repeated
    with pytest.raises(BadSample, match="too_short: clip"):
        decode_video(clip, [0, 12], backend, "clip")
    with pytest.raises(BadSample, match="undecodable: junk"):
        decode_video(b"\x00" * 500, [0], backend, "junk")


def test_frame_sampling_by_stride_and_target_fps():
    rng = random.Random(0)
    assert usable_frames(12, 8.0, stride=2, target_fps=None) == 6
    assert usable_frames(30, 30.0, stride=1, target_fps=10.0) == 10
    idx = frame_indices(12, 8.0, frames=4, stride=3, target_fps=None, rng=rng)
    assert np.diff(idx).tolist() == [3, 3, 3] and 0 <= idx[0] <= 2
    idx = frame_indices(30, 30.0, frames=5, stride=1, target_fps=10.0, rng=rng)
    assert np.diff(idx).tolist() == [3, 3, 3, 3]
    with pytest.raises(BadSample, match="low_fps"):
        frame_indices(30, 8.0, frames=4, stride=1, target_fps=10.0, rng=rng)
    with pytest.raises(BadSample, match="too_short"):
        frame_indices(6, 8.0, frames=4, stride=2, target_fps=None, rng=rng)


def test_resize_covers_then_centre_crops():
    frames = torch.zeros(2, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 10:70] = 255  # a white band over the middle 60 columns
    out = resize_crop(frames, 32, 32)  # 40x80 -> 32x64 -> the centre 32x32 (source columns 20-60): white
    assert out.shape == (3, 2, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out, torch.ones_like(out))
    assert resize_crop(torch.zeros(1, 8, 8, 3, dtype=torch.uint8), 8, 8).min() == -1


def test_npy_never_unpickles():
    with pytest.raises(BadSample, match="undecodable: x.npy"):
        load_npy(npy_with_pickle(), "x.npy")


def npy_with_pickle() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def test_online_batches_per_bucket(video_shards):
    pattern, keys = video_shards
    cfg = data_config(pattern, buckets=VIDEO_BUCKETS, precomputed=False, epochs=1, batch_size=2, frame_stride=1)
    loader = build_loader(cfg, seed=0)
    seen = []
    for batch in loader:
        f, h, w = batch["bucket"]
        assert batch["video"].shape == (len(batch["keys"]), 3, f, h, w) and batch["video"].dtype == torch.float32
        assert batch["video"].min() >= -1 and batch["video"].max() <= 1 and batch["captions"][0]
        seen += batch["keys"]
    assert sorted(seen) == sorted(keys)
    # 12-frame 48x64 clips fill 8x32x32; 6-frame 40x80 clips fill 4x32x64; PNGs the image bucket
    assert loader.stats()["buckets"] == {"1x32x32": 4, "4x32x64": 4, "8x32x32": 4}


def test_online_resume_is_exact(video_shards):
    pattern, _ = video_shards
    cfg = data_config(pattern, buckets=VIDEO_BUCKETS, precomputed=False, batch_size=2, decode_backend="pyav")
    it = iter(build_loader(cfg, seed=4))
    reference = [next(it) for _ in range(6)]
    first = build_loader(cfg, seed=4)
    it = iter(first)
    head = [next(it) for _ in range(2)]
    resumed = build_loader(cfg, seed=4)
    resumed.load_state_dict(first.state_dict())
    it = iter(resumed)
    for want in reference[2:]:
        got = next(it)
        assert got["keys"] == want["keys"] and torch.equal(got["video"], want["video"])
    assert [b["keys"] for b in head] == [b["keys"] for b in reference[:2]]


def test_corrupt_members_are_skipped_and_counted(tmp_path, caplog):
    good = [video_sample(f"ok{i}", 12, 48, 64) for i in range(2)]
    bad = [
        {**video_sample("junkvideo", 12, 48, 64), "mp4": b"\x00" * 300},  # undecodable
        video_sample("nocaption", 12, 48, 48, caption=None),  # missing caption
        video_sample("short", 4, 48, 48),  # 4 frames, the only video bucket needs 8
        {**video_sample("badjson", 12, 48, 64), "json": b"{not json"},
        {"__key__": "nojson", "mp4": encode_testsrc(12, 48, 64)},
        {**video_sample("tiny", 12, 16, 16), "json": json.dumps({"caption": "c", "fps": 8.0, "num_frames": 12,
                                                                  "height": 16, "width": 16}).encode()},
        {**video_sample("liar", 12, 48, 64), "json": json.dumps({"caption": "c", "fps": 8.0, "num_frames": 40,
                                                                  "height": 48, "width": 64}).encode()},
    ]
    shard = write_shard(tmp_path / "mixed.tar", good[:1] + bad + good[1:])
    other = write_shard(tmp_path / "other.tar", [video_sample("ok2", 12, 48, 64)])
    cfg = data_config([shard, other], buckets=[(8, 32, 32)], precomputed=False, epochs=1, batch_size=1)
    loader = build_loader(cfg, seed=0)
    assert sorted(k for b in loader for k in b["keys"]) == ["ok0", "ok1", "ok2"]
    # "liar" claims 40 frames: its sampled start lies past the real 12, so decoding finds it short
    assert loader.stats()["rejects"] == {"undecodable": 1, "no_caption": 1, "too_short": 2, "bad_metadata": 1,
                                         "no_metadata": 1, "too_small": 1}
    assert "junkvideo.mp4" in caplog.text and "nocaption.json: caption=None" in caplog.text


def test_precomputed_shapes_and_deterministic_latents(tmp_path):
    sample = latent_sample("a", (8, 32, 32), text_tokens=5, text_width=24, seed=3)
    shard = write_shard(tmp_path / "p.tar", [sample, latent_sample("b", (8, 32, 32), text_tokens=2, text_width=24)])
    cfg = data_config([shard], buckets=[(8, 32, 32)], epochs=1)

    def first_batch(seed):  # rows ordered by key (the shuffle decides the batch order)
        batch = next(iter(build_loader(cfg, seed=seed)))
        order = sorted(range(2), key=lambda i: batch["keys"][i])
        return {k: v[order] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    batch = first_batch(9)
    assert batch["latents"].shape == (2, 4, 2, 4, 4) and batch["latents"].dtype == torch.float32
    assert batch["text_states"].shape == (2, 5, 24) and batch["text_mask"].dtype == torch.long
    assert batch["text_mask"].tolist() == [[1] * 5, [1, 1, 0, 0, 0]]
    assert batch["bucket"] == (8, 32, 32) and sorted(batch["keys"]) == ["a", "b"]
    assert torch.all(batch["text_states"][1, 2:] == 0)
    assert torch.equal(batch["latents"], first_batch(9)["latents"])
    assert not torch.equal(batch["latents"], first_batch(10)["latents"])
    # a draw from N(mean, exp(-2 / 2)^2) x 0.13: mean restored, noise std 0.13 * e^-1
    moments = load_npy(sample["latent.npy"], "a").astype(np.float32)
    residual = batch["latents"][0] / 0.13 - torch.from_numpy(moments[:4])
    assert abs(residual.std().item() - np.exp(-1)) < 0.1


def test_precomputed_bad_members_are_counted(tmp_path):
    good = latent_sample("good", LATENT_BUCKETS[0], 3)
    samples = [
        good,
        {**latent_sample("pickled", LATENT_BUCKETS[0], 3), "latent.npy": npy_with_pickle()},
        {k: v for k, v in latent_sample("notext", LATENT_BUCKETS[0], 3).items() if k != "t5.npy"},
        latent_sample("otherbucket", (8, 64, 64), 3),
        {**latent_sample("wrongshape", LATENT_BUCKETS[0], 3), "latent.npy": npy(np.zeros((8, 1, 4, 4), np.float16))},
        latent_sample("long", LATENT_BUCKETS[0], 40),
    ]
    cfg = data_config([write_shard(tmp_path / "p.tar", samples)], epochs=1, batch_size=1, text_len=32)
    loader = build_loader(cfg, seed=0)
    assert [k for b in loader for k in b["keys"]] == ["good"]
    assert loader.stats()["rejects"] == {"undecodable": 1, "no_text": 1, "bucket_not_in_table": 1, "bad_latent": 1,
                                         "text_too_long": 1}


def test_a_missing_backend_fails_at_build_naming_the_key(video_shards, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_decord(name, *args, **kwargs):
        if name == "decord":
            raise ImportError("No module named 'decord'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_decord)
    pattern, _ = video_shards
    with pytest.raises(RuntimeError, match="data.decode_backend=decord: cannot import decord"):
        build_loader(data_config(pattern, buckets=VIDEO_BUCKETS, precomputed=False))
