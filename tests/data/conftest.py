"""Shared shard sets for the loader tests; each is written once per session into a tmp dir."""

from __future__ import annotations

import pytest

from shardgen import LATENT_BUCKETS, image_sample, latent_sample, video_sample, write_shard


@pytest.fixture(scope="session")
def latent_shards(tmp_path_factory):
    """8 shards x 5 precomputed samples (keys s<shard>_<i>), alternating buckets."""
    root = tmp_path_factory.mktemp("latent")
    keys = []
    for s in range(8):
        samples = [latent_sample(f"s{s}_{i}", LATENT_BUCKETS[(s + i) % 2], text_tokens=2 + (s * 5 + i) % 7,
                                 seed=s * 10 + i) for i in range(5)]
        write_shard(root / f"{s:03d}.tar", samples)
        keys += [x["__key__"] for x in samples]
    return str(root / "{000..007}.tar"), keys


# Online path: videos of a few frames at 32-64 px and PNG images.
VIDEO_BUCKETS = [(8, 32, 32), (4, 32, 64), (1, 32, 32)]


@pytest.fixture(scope="session")
def video_shards(tmp_path_factory):
    """4 shards x 3 raw samples: 12-frame 48x64 clips, 6-frame 40x80 clips and 40x40 PNGs."""
    root = tmp_path_factory.mktemp("video")
    keys = []
    for s in range(4):
        samples = [video_sample(f"v{s}_0", 12, 48, 64), video_sample(f"v{s}_1", 6, 40, 80),
                   image_sample(f"v{s}_2", 40, 40)]
        write_shard(root / f"{s:03d}.tar", samples)
        keys += [x["__key__"] for x in samples]
    return str(root / "{000..003}.tar"), keys
