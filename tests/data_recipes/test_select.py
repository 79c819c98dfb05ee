"""Selection over a hand-made catalog: presets drop by first failing condition, skip unscored
columns, and a free ``where`` filter names its bad column. No video is involved."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_recipes.catalog import write_catalog
from data_recipes.config import CurateConfigError, SelectConfig, load_config
from data_recipes.records import ClipRecord, VideoRecord
from data_recipes.stages.select import select


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    scores = {"a": (100, 5.0, 10.0), "b": (10, 5.0, 10.0), "c": (100, 4.0, 10.0), "d": (100, 5.0, 500.0), "e": (15, 1.0, 500.0)}
    clips = [ClipRecord(key=k, source="v.mp4", clip_path=f"clips/{k}.mp4", clip_start=0, clip_end=3, fps=25,
                        num_frames=75, height=720, width=1280, codec="h264", cut="encode",
                        scores={"brightness": b, "aesthetic": a, "motion": m})
             for k, (b, a, m) in scores.items()]
    video = VideoRecord(source="v.mp4", key="v", fingerprint="1-1", signature="s", clips=clips)
    return write_catalog([video], tmp_path, ["brightness", "aesthetic", "motion"])[1]


def test_preset_drops_under_the_first_failing_condition(catalog: Path):
    cfg = SelectConfig(name="t", conditions={"brightness": "brightness BETWEEN 20 AND 180", "aesthetic": "aesthetic >= 4.8",
                                             "motion": "motion BETWEEN 1 AND 100", "text_area": "text_area <= 0.0005"})
    selection = select(catalog, cfg)
    assert [row["key"] for row in selection.kept] == ["a"]
    assert selection.dropped == {"select:brightness": 2, "select:aesthetic": 1, "select:motion": 1}
    assert selection.skipped == ["text_area"] and "text_area" not in selection.applied
    assert selection.kept[0]["aesthetic"] == 5.0 and selection.kept[0]["short_side"] == 720


def test_where_replaces_the_conditions(catalog: Path):
    cfg = SelectConfig(conditions={"brightness": "brightness > 1000"}, where="aesthetic >= 4.8 AND motion BETWEEN 1 AND 100")
    selection = select(catalog, cfg)
    assert [row["key"] for row in selection.kept] == ["a", "b"] and selection.dropped == {"select:where": 3}


def test_bad_filters_name_their_key(catalog: Path, tmp_path: Path):
    with pytest.raises(CurateConfigError, match=r"select\.where='clip_similarity > 0\.2'.*columns: key, source"):
        select(catalog, SelectConfig(where="clip_similarity > 0.2"))
    with pytest.raises(CurateConfigError, match=r"select\.conditions\.motion='motion >>> 1'"):
        select(catalog, SelectConfig(conditions={"motion": "motion >>> 1"}))
    with pytest.raises(FileNotFoundError, match="no clip catalog"):
        select(tmp_path / "missing.parquet", SelectConfig())


def test_presets_compose_and_bad_stage_lists_fail(tmp_path: Path):
    cfg = load_config([f"output_dir={tmp_path}", "stages=[select,shard]", "select=finetune",
                       'select.conditions.motion="motion BETWEEN 1 AND 100"'])
    assert cfg.select.name == "finetune" and cfg.select.conditions["aesthetic"] == "aesthetic >= 5.3"
    assert cfg.select.conditions["motion"] == "motion BETWEEN 1 AND 100"
    with pytest.raises(CurateConfigError, match=r"stages=\['split', 'select'\]: must be consecutive"):
        load_config([f"output_dir={tmp_path}", "stages=[split,select]"])
    with pytest.raises(CurateConfigError, match=r"input_dir=None: the per-video stages need"):
        load_config([f"output_dir={tmp_path}"])
    with pytest.raises(CurateConfigError, match=r"Key 'bogus' not in 'CurateConfig'"):
        load_config([f"output_dir={tmp_path}", "bogus=1"])
    with pytest.raises(CurateConfigError, match=r"workers=2: is the local backend's process count"):
        load_config([f"output_dir={tmp_path}", "stages=[select]", "backend=ray", "workers=2"])
