"""Exact resume: after load_state_dict of a state taken at step N, the next batches are torch.equal
to those an uninterrupted run draws, with in-process and with worker-process loading."""

from __future__ import annotations

import logging

import pytest
import torch

from allegro_train.data import build_loader

from shardgen import data_config


def _draw(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.keys() == y.keys(), i
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert torch.equal(x[key], y[key]), (i, key)
            else:
                assert x[key] == y[key], (i, key)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_at_step_n_draws_the_uninterrupted_batches(latent_shards, tmp_path, num_workers):
    pattern, _ = latent_shards
    # Both buckets hold 32 latent positions: a 96 budget gives batches of 3; 0.3 of them images.
    cfg = data_config(pattern, num_workers=num_workers, token_budget=96, image_fraction=0.3, shuffle_buffer=5)
    total, stop = 18, 7  # 18 x 3 samples > the 40 of one epoch: the resume crosses an epoch boundary
    uninterrupted = build_loader(cfg, seed=11)
    reference = _draw(uninterrupted, total)
    assert all(w["epoch"] == 1 for w in uninterrupted.state_dict()["worker_states"])  # crossed into epoch 1

    first = build_loader(cfg, seed=11)
    head = _draw(first, stop)
    torch.save(first.state_dict(), tmp_path / "loader.pt")
    resumed = build_loader(cfg, seed=11)
    resumed.load_state_dict(torch.load(tmp_path / "loader.pt", weights_only=True))
    tail = _draw(resumed, total - stop)
    assert_batches_equal(head + tail, reference)
    # the resumed loader's state also continues: a second resume from it stays on track
    again = build_loader(cfg, seed=11)
    again.load_state_dict(resumed.state_dict())
    assert_batches_equal(_draw(again, 1), _draw(build_loader(cfg, seed=11), total + 1)[-1:])


def test_resume_within_one_iteration_continues_the_same_stream(latent_shards):
    pattern, _ = latent_shards
    cfg = data_config(pattern)
    loader = build_loader(cfg, seed=2)
    reference = _draw(build_loader(cfg, seed=2), 6)
    assert_batches_equal(_draw(loader, 3) + _draw(loader, 3), reference)  # a new iter() resumes, not restarts


def test_restart_on_another_layout_replays_the_current_epoch(latent_shards, caplog):
    pattern, keys = latent_shards
    one = build_loader(data_config(pattern), seed=5)
    _draw(one, 4)
    state = one.state_dict()
    two_ranks = [build_loader(data_config(pattern, epochs=1), rank=r, world_size=2, seed=5) for r in range(2)]
    with caplog.at_level(logging.WARNING):
        for loader in two_ranks:
            loader.load_state_dict(state)
    assert "epoch 0 restarts" in caplog.text
    replayed = sorted(k for loader in two_ranks for batch in loader for k in batch["keys"])
    assert replayed == sorted(keys)  # the whole epoch again on the new split, nothing skipped


def test_a_mismatched_state_fails_naming_why(latent_shards, tmp_path):
    pattern, _ = latent_shards
    state = build_loader(data_config(pattern), seed=1).state_dict()
    with pytest.raises(ValueError, match="seed=1, this loader has seed=2"):
        build_loader(data_config(pattern), seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="another data.shards list"):
        build_loader(data_config(pattern.replace("007", "006")), seed=1).load_state_dict(state)


def test_demo_shards_resume_mid_run_exactly(tmp_path):
    """The demo's two-bucket synthetic shards, resumed after batch 5 of 8: the same batches, bitwise."""
    from omegaconf import OmegaConf

    from allegro_train.config import load_config
    from allegro_train.data import write_synthetic_shards

    cfg = load_config(["+stage=demo", "data.batch_size=2"])
    buckets = [(b.frames, b.height, b.width) for b in cfg.data.buckets]
    pattern, null = write_synthetic_shards(tmp_path, buckets, caption_channels=32, text_len=cfg.data.text_len)
    data = OmegaConf.merge(cfg.data, {"shards": [pattern], "null_caption": null})

    whole = iter(build_loader(data, rank=0, world_size=1, seed=0))
    reference = [next(whole) for _ in range(8)]
    first = build_loader(data, rank=0, world_size=1, seed=0)
    batches = iter(first)
    drawn = [next(batches) for _ in range(5)]
    resumed = build_loader(data, rank=0, world_size=1, seed=0)
    resumed.load_state_dict(first.state_dict())
    batches = iter(resumed)
    drawn += [next(batches) for _ in range(3)]
    for ref, got in zip(reference, drawn):
        assert ref["keys"] == got["keys"] and ref["bucket"] == got["bucket"]
        assert torch.equal(ref["latents"], got["latents"]) and torch.equal(ref["text_states"], got["text_states"])
