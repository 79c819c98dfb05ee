"""backend=ray on a local two-CPU Ray instance gives the catalog and report the local backend gives."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from data_recipes.backends.ray import RayBackend
from data_recipes.config import load_config
from data_recipes.pipeline import run
from tests.data_recipes.conftest import TINY


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_matches_the_local_backend(raw_videos: Path, tmp_path: Path, local_ray: None,
                                               monkeypatch: pytest.MonkeyPatch):
    mapped = []  # proves the ray run went through Ray Data, not the local pool
    ray_map = RayBackend.map

    def spy(self, fn, tasks, desc):
        tasks = list(tasks)
        mapped.append(len(tasks))
        yield from ray_map(self, fn, tasks, desc)

    monkeypatch.setattr(RayBackend, "map", spy)
    reports = {}
    for backend in ("local", "ray"):
        out = tmp_path / backend
        reports[backend] = run(load_config([f"input_dir={raw_videos}", f"output_dir={out}", f"backend={backend}", *TINY]))
    for report in reports.values():  # paths differ by output_dir only
        report["shards"] = [Path(p).name for p in report["shards"]]
        report.pop("catalog")
    assert mapped == [7]
    assert reports["ray"] == reports["local"]
    assert reports["ray"]["videos_seen"] == 7 and reports["ray"]["clips_kept"] == 2
    for table in ("videos", "clips"):
        local, remote = (pq.read_table(tmp_path / b / "catalog" / f"{table}.parquet") for b in ("local", "ray"))
        assert remote.sort_by("key").to_pylist() == local.sort_by("key").to_pylist()
