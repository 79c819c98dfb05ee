"""Shared shard sets for the loader tests; each is written once per session into a tmp dir."""

from __future__ import annotations

import pytest

from shardgen import LATENT_BUCKETS, latent_sample, write_shard


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
