"""Shard lists and the split across ranks and workers: every sample once per epoch, nothing shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from allegro_train.data import build_loader
from allegro_train.data.shards import epoch_shards, expand_shards

from shardgen import LATENT_BUCKETS, data_config, latent_sample, write_shard


def test_expand_paths_globs_braces_and_pipes(tmp_path):
    for name in ("a0.tar", "a1.tar", "b.tar", "c.tar"):
        (tmp_path / name).write_bytes(b"")
    urls = expand_shards([f"{tmp_path}/a*.tar", f"{tmp_path}/{{b,c}}.tar", "pipe:cat /x/{0..1}.tar"])
    assert urls == [f"{tmp_path}/a0.tar", f"{tmp_path}/a1.tar", f"{tmp_path}/b.tar", f"{tmp_path}/c.tar",
                    "pipe:cat /x/0.tar",
                    "pipe:cat /x/1.tar"]
    with pytest.raises(FileNotFoundError, match="d.tar"):
        expand_shards([f"{tmp_path}/d.tar"])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_shards([f"{tmp_path}/z*.tar"])
    with pytest.raises(ValueError, match="more than once"):
        expand_shards([f"{tmp_path}/a0.tar", f"{tmp_path}/a{{0..1}}.tar"])


def test_epoch_shards_partition_and_reshuffle():
    slots = [epoch_shards(10, seed=3, epoch=0, slot=s, num_slots=4) for s in range(4)]
    assert sorted(sum(slots, [])) == list(range(10))
    assert slots != [epoch_shards(10, seed=3, epoch=1, slot=s, num_slots=4) for s in range(4)]


@pytest.mark.parametrize("num_workers", [2])
def test_every_sample_exactly_once_per_epoch_across_2_ranks_x_2_workers(latent_shards, num_workers):
    pattern, keys = latent_shards
    seen, per_rank = [], []
    for rank in range(2):
        cfg = data_config(pattern, num_workers=num_workers, epochs=1)
        loader = build_loader(cfg, rank=rank, world_size=2, seed=7)
        rank_keys = []
        for batch in loader:
            frames, height, width = batch["bucket"]
            assert batch["bucket"] in LATENT_BUCKETS
            # one bucket per batch: every latent has that bucket's grid
            t = 1 if frames == 1 else frames // 4
            assert batch["latents"].shape[1:] == (4, t, height // 8, width // 8)
            assert batch["text_mask"].sum(1).tolist() == [int(m.sum()) for m in batch["text_mask"]]
            rank_keys += batch["keys"]
        per_rank.append(set(rank_keys))
        seen += rank_keys
        assert sum(loader.stats()["buckets"].values()) == len(rank_keys) and not loader.stats()["rejects"]
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen))
    assert not per_rank[0] & per_rank[1] and all(per_rank)


def test_pipe_urls_stream_through_a_command(latent_shards, tmp_path):
    pattern, keys = latent_shards
    root = Path(pattern).parent
    cfg = data_config([f"pipe:cat {root}/{{000..003}}.tar"], epochs=1)
    got = [k for batch in build_loader(cfg) for k in batch["keys"]]
    assert sorted(got) == sorted(k for k in keys if int(k[1:].split("_")[0]) < 4)


def test_too_few_shards_for_the_readers_is_an_error(latent_shards):
    pattern, _ = latent_shards
    with pytest.raises(ValueError, match=r"8 shard\(s\) cannot feed 4 rank\(s\) x 3 worker\(s\)"):
        build_loader(data_config(pattern, num_workers=3), rank=0, world_size=4)


def test_unreadable_shard_is_retried_then_skipped_and_counted(latent_shards, tmp_path, caplog):
    pattern, keys = latent_shards
    (tmp_path / "broken.tar").write_bytes(os.urandom(4096))  # not a tar at all
    good = write_shard(tmp_path / "good.tar", [latent_sample(f"g{i}", LATENT_BUCKETS[0], 4) for i in range(4)])
    # a tar cut off in the middle of its third sample: the first two still train
    whole = write_shard(tmp_path / "whole.tar", [latent_sample(f"t{i}", LATENT_BUCKETS[0], 4) for i in range(4)])
    data = Path(whole).read_bytes()
    (tmp_path / "truncated.tar").write_bytes(data[: len(data) // 2 + 700])
    cfg = data_config([str(tmp_path / "broken.tar"), good, str(tmp_path / "truncated.tar")], epochs=1, shard_retries=1)
    loader = build_loader(cfg, seed=1)
    got = sorted(k for batch in loader for k in batch["keys"])
    assert got == ["g0", "g1", "g2", "g3", "t0", "t1"]
    assert loader.stats()["rejects"] == {"shard_unreadable": 2}
    assert "broken.tar failed 2 times" in caplog.text and "truncated.tar" in caplog.text


def test_state_is_plain_and_loads_with_weights_only(latent_shards, tmp_path):
    pattern, _ = latent_shards
    loader = build_loader(data_config(pattern), seed=0)
    it = iter(loader)
    for _ in range(3):
        next(it)
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state == loader.state_dict()
