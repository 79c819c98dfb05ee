"""The VLM captioner on a tiny random LLaVA the tests build: batching, order, and a full curation
run where sidecar and VLM captions (and the model scorers) reach the catalog and the shards."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from data_recipes.captioners.vlm import VLMCaptioner
from data_recipes.config import VLMConfig, load_config
from data_recipes.media import probe
from data_recipes.pipeline import run
from data_recipes.records import ClipRecord
from tests.data_recipes.conftest import RATE, TINY, hard_cut, lavfi
from tests.data_recipes.tiny_models import WORDS, build_bright_text_detector, build_tiny_clip, build_tiny_llava

CAPTION_WORDS = 6


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"vlm": build_tiny_llava(root / "vlm"), "clip": build_tiny_clip(root / "clip"),
            "ocr": build_bright_text_detector(root / "ocr.onnx")}


def make_clips(folder: Path) -> list[ClipRecord]:
    clips = []
    for i, source in enumerate(("testsrc=", "testsrc2=", "color=c=red:", "rgbtestsrc=", "smptebars=")):
        path = lavfi(folder / f"c_{i:03d}.mp4", f"{source}size=64x48:rate={RATE}:duration=1")
        info = probe(path, count_frames=True)
        clips.append(ClipRecord(key=path.stem, source="c.mp4", clip_path=path.name, clip_start=0, clip_end=1,
                                fps=info.fps, num_frames=info.num_frames, height=48, width=64, codec="h264", cut="encode"))
    return clips


def test_vlm_captions_in_batches_and_in_clip_order(models: dict[str, Path], tmp_path: Path):
    clips = make_clips(tmp_path)
    captioner = VLMCaptioner(VLMConfig(path=str(models["vlm"]), num_frames=3, batch_size=2, max_new_tokens=CAPTION_WORDS))
    batch_sizes = []
    generate = captioner.model.generate

    def spy(**inputs):
        batch_sizes.append(len(inputs["input_ids"]))
        return generate(**inputs)

    captioner.model.generate = spy
    captions = captioner.caption(tmp_path / "c.mp4", clips, tmp_path)
    assert batch_sizes == [2, 2, 1]
    one_by_one = [captioner.caption(tmp_path / "c.mp4", [clip], tmp_path)[0] for clip in clips]
    assert captions == one_by_one  # batching (left padding) changes no caption
    assert len(set(captions)) > 1  # the captions follow the frames, so clips differ
    for caption in captions:
        assert len(caption.split()) == CAPTION_WORDS and set(caption.split()) <= set(WORDS)


def test_captions_and_model_scores_reach_catalog_and_shards(models: dict[str, Path], tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    hard_cut(raw / "cut.mp4")  # two clips, captioned by its sidecar
    (raw / "cut.json").write_text(json.dumps({"caption": "a test pattern, then an orange wall"}))
    lavfi(raw / "plain.mp4", f"testsrc=size=128x96:rate={RATE}:duration=3")  # no sidecar: the VLM captions it
    base = [f"input_dir={raw}", "select=all", *TINY, "score.scorers=[brightness,clip_similarity,text_area]",
            f"score.clip_similarity.model_path={models['clip']}", f"score.text_area.model_path={models['ocr']}"]
    report = run(load_config([*base, f"output_dir={tmp_path / 'out'}", f"caption.vlm.path={models['vlm']}",
                              f"caption.vlm.max_new_tokens={CAPTION_WORDS}", "caption.vlm.batch_size=2"]))
    clips = {c["key"]: c for c in pq.read_table(tmp_path / "out" / "catalog" / "clips.parquet").to_pylist()}
    assert sorted(clips) == ["cut_000", "cut_001", "plain_000"] and report["clips_uncaptioned"] == 0
    assert [clips[k]["caption_source"] for k in sorted(clips)] == ["sidecar", "sidecar", "vlm"]
    assert len(clips["plain_000"]["caption"].split()) == CAPTION_WORDS
    for clip in clips.values():
        assert -1 <= clip["clip_similarity"] <= 1 and 0 <= clip["text_area"] <= 1
    samples = {s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(report["shards"], shardshuffle=False)}
    for key, meta in samples.items():
        assert meta["caption"] == clips[key]["caption"]
        assert meta["scores"]["clip_similarity"] == clips[key]["clip_similarity"]

    # Neither a sidecar nor a VLM: the clips stay, uncaptioned and counted, with no CLIP similarity.
    report = run(load_config([*base, f"output_dir={tmp_path / 'bare'}", "caption.sidecar=false"]))
    clips = pq.read_table(tmp_path / "bare" / "catalog" / "clips.parquet").to_pylist()
    assert report["clips_uncaptioned"] == report["clips_kept"] == 3
    assert all(c["caption"] is None and c["clip_similarity"] is None and c["text_area"] is not None for c in clips)
