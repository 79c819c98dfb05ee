"""The curation funnel end to end on ffmpeg-made videos: the command line, report counts, cut
positions, catalog columns, shards read back with webdataset, re-selection and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from data_recipes import pipeline
from data_recipes.config import load_config
from data_recipes.pipeline import run
from tests.data_recipes.conftest import RATE, TINY, hard_cut, lavfi

REPO = Path(__file__).resolve().parents[2]
METRICS = ["brightness", "black_border", "clarity", "motion", "frame_diff"]


@pytest.fixture(scope="module")
def curated(raw_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full run through the command line users type (default preset, two workers)."""
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, str(REPO / "data_recipes" / "curate.py"), f"input_dir={raw_videos}",
                    f"output_dir={out}", "workers=2", *TINY], check=True, cwd=REPO, env=env)
    return out


def test_report_counts_every_video_and_drop_reason(curated: Path):
    report = json.loads((curated / "report.json").read_text())
    assert report["videos_seen"] == 7  # notes.md is not a video
    assert report["videos_corrupt"] == 2  # random bytes, and an mp4 cut in half
    assert report["clips_detected"] == 3  # cut.mp4 -> 2 scenes, dark.mp4 -> 1
    assert report["clips_kept"] == 2 and report["clips_uncaptioned"] == 0
    assert report["dropped"] == {"corrupt": 2, "too_short": 1, "low_fps": 1, "low_resolution": 1,
                                 "select:brightness": 1}
    assert report["selection"]["name"] == "t2v_368p_40f"
    assert set(report["selection"]["skipped_unscored"]) == {"text_area", "aesthetic", "clip_similarity"}
    assert [Path(p).name for p in report["shards"]] == ["shard-000000.tar"]
    videos = {v["source"]: v for v in pq.read_table(curated / "catalog" / "videos.parquet").to_pylist()}
    assert "InvalidDataError" in videos["corrupt.mp4"]["error"]
    assert videos["slow.mp4"]["error"] == "10.00 fps < probe.min_fps=23.0"


def test_clips_split_at_the_hard_cut_with_ends_trimmed(curated: Path):
    clips = {c["key"]: c for c in pq.read_table(curated / "catalog" / "clips.parquet").to_pylist()}
    first, second = clips["cut_000"], clips["cut_001"]
    # The cut is at frame 75 (3.0 s); each scene loses 10 frames (0.4 s) at both ends.
    assert (first["clip_start"], first["clip_end"]) == pytest.approx((10 / RATE, 65 / RATE))
    assert (second["clip_start"], second["clip_end"]) == pytest.approx((85 / RATE, 140 / RATE))
    assert first["num_frames"] == second["num_frames"] == 55
    assert first["caption"] == "a test pattern, then an orange wall" and first["caption_source"] == "sidecar"
    assert second["brightness"] > first["brightness"]  # flat orange against the test pattern
    assert second["clarity"] < 1 < first["clarity"]  # a flat colour has no edges


def test_catalog_has_every_metric_for_every_clip(curated: Path):
    table = pq.read_table(curated / "catalog" / "clips.parquet")
    assert set(METRICS) <= set(table.column_names)
    assert {"key", "source", "clip_start", "clip_end", "fps", "num_frames", "height", "width", "caption",
            "duration", "short_side"} <= set(table.column_names)
    assert all(v is not None for m in METRICS for v in table.column(m).to_pylist())


def test_shards_hold_the_documented_members(curated: Path):
    report = json.loads((curated / "report.json").read_text())
    samples = list(wds.WebDataset(report["shards"], shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["cut_000", "cut_001"]
    for sample in samples:
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"mp4", "json"}
        meta = json.loads(sample["json"])
        assert set(meta) == {"caption", "source", "clip_start", "clip_end", "fps", "num_frames", "height",
                             "width", "scores"}
        assert set(meta["scores"]) == set(METRICS) and meta["source"] == "cut.mp4"
        path = curated / f"{sample['__key__']}.check.mp4"
        path.write_bytes(sample["mp4"])
        with av.open(str(path)) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames == meta["num_frames"] and (meta["height"], meta["width"]) == (96, 128)
    manifest = json.loads((Path(report["shards"][0]).parent / "manifest.json").read_text())
    assert manifest["dropped"] == report["dropped"]


def test_reselecting_reads_only_the_catalog(curated: Path, monkeypatch: pytest.MonkeyPatch):
    work_mtimes = {p: p.stat().st_mtime_ns for p in (curated / "work").iterdir()}

    def no_curation(*args, **kwargs):
        raise AssertionError("a select run must not probe, split or score")

    monkeypatch.setattr(pipeline, "curate_videos", no_curation)
    cfg = load_config([f"output_dir={curated}", "stages=[select,shard]", "select.name=dark",
                       'select.where="brightness < 20 AND motion BETWEEN 0 AND 100"'])
    report = run(cfg)
    assert report["clips_kept"] == 1 and report["dropped"]["select:where"] == 2
    assert [s["__key__"] for s in wds.WebDataset(report["shards"], shardshuffle=False)] == ["dark_000"]
    assert {p: p.stat().st_mtime_ns for p in (curated / "work").iterdir()} == work_mtimes


def test_rerun_resumes_and_stream_copies_on_keyframes(tmp_path: Path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    hard_cut(raw / "cut.mp4")
    lavfi(raw / "plain.mp4", f"testsrc=size=128x96:rate={RATE}:duration=3", "-g", "25")
    overrides = [f"input_dir={raw}", f"output_dir={out}", "split.trim_frames=0", "select=all", *TINY]
    first = run(load_config(overrides))
    clips = {c["key"]: c for c in pq.read_table(out / "catalog" / "clips.parquet").to_pylist()}
    assert clips["plain_000"]["cut"] == "copy"  # starts at frame 0, a keyframe: packets copied
    assert clips["cut_000"]["cut"] == "copy" and clips["cut_000"]["num_frames"] == 75

    # A run killed while curating plain.mp4: its work file is missing, a half clip is left behind.
    kept = out / "work" / "cut.json"
    kept_mtime = kept.stat().st_mtime_ns
    (out / "work" / "plain.json").unlink()
    (out / "clips" / "plain_000.partial.mp4").write_bytes(b"half")
    second = run(load_config(overrides))
    assert kept.stat().st_mtime_ns == kept_mtime  # finished video not redone
    assert (out / "work" / "plain.json").is_file() and not (out / "clips" / "plain_000.partial.mp4").exists()
    assert {k: second[k] for k in ("videos_seen", "clips_kept", "dropped")} == \
        {k: first[k] for k in ("videos_seen", "clips_kept", "dropped")}
