"""The model scorers on tiny weights the tests build: CLIP text-video similarity against the same
embeddings computed by hand, and the OCR text area of rectangles a known detector calls text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_recipes.config import ClipSimilarityConfig, CurateConfigError, TextAreaConfig, load_config
from data_recipes.media import ClipFrames
from data_recipes.scorers.clip_similarity import ClipSimilarity
from data_recipes.scorers.text_area import TextArea
from tests.data_recipes.tiny_models import build_bright_text_detector, build_tiny_clip


def frames_of(*images: np.ndarray, caption: str | None = None) -> ClipFrames:
    return ClipFrames(frames=np.stack(images), next_frames=np.stack(images), fps=25.0, caption=caption)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bright_text_detector(tmp_path_factory.mktemp("ocr") / "bright_text.onnx")


def test_clip_similarity_is_caption_against_mean_frame_embedding(tiny_clip: Path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
    scorer = ClipSimilarity(ClipSimilarityConfig(model_path=str(tiny_clip), num_frames=3))
    caption = "a red cat"  # 9 tokens: the tiny tokenizer reads letter by letter
    value = scorer(frames_of(*images, caption=caption))
    # By hand, one frame at a time: frames 0, 4 and 7 of the 8 (evenly spread), text alone.
    with torch.no_grad():
        pixels = scorer.processor(images=[images[i] for i in (0, 4, 7)], return_tensors="pt")["pixel_values"]
        tokens = scorer.processor(text=[caption], return_tensors="pt")
        out = scorer.model(pixel_values=pixels, **tokens)
        per_frame = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        video = torch.nn.functional.normalize(per_frame.mean(0), dim=-1)
        expected = float(video @ torch.nn.functional.normalize(out.text_embeds[0], dim=-1))
    assert value == pytest.approx(expected, abs=1e-5) and -1 <= value <= 1
    assert scorer(frames_of(*images, caption="a blue dog")) != pytest.approx(value)
    # A caption longer than CLIP's text window (32 tokens here) is cut, not an error.
    assert -1 <= scorer(frames_of(*images, caption=" ".join([caption] * 10))) <= 1
    assert scorer(frames_of(*images, caption=None)) is None  # uncaptioned: a NULL, not a number


def test_text_area_measures_text_regions_at_any_frame_size(detector: Path):
    # unclip_ratio small: this detector marks whole regions, not DB's shrunk kernels.
    scorer = TextArea(TextAreaConfig(model_path=str(detector), mean=[0, 0, 0], unclip_ratio=0.05))
    for height, width in ((96, 128), (90, 150)):  # 90 x 150 is fed at 96 x 160 and mapped back
        blank = np.zeros((height, width, 3), np.uint8)
        caption_bar = blank.copy()
        caption_bar[-30:-10, 20:-20] = 255
        logo = blank.copy()
        logo[4:16, 4:28] = 255
        assert scorer.frame_area(blank) == 0
        assert scorer.frame_area(caption_bar) == pytest.approx(20 * (width - 40) / (height * width), rel=0.15)
        assert scorer.frame_area(logo) == pytest.approx(12 * 24 / (height * width), rel=0.3)
        both = caption_bar | logo
        assert scorer.frame_area(both) == pytest.approx(scorer.frame_area(caption_bar) + scorer.frame_area(logo), rel=0.05)
        # The clip's value is its most texty sample: a title card in one frame is enough.
        assert scorer(frames_of(blank, both, blank)) == scorer.frame_area(both)


def test_missing_weights_fail_naming_the_key(tmp_path: Path, detector: Path):
    base = [f"input_dir={tmp_path}", f"output_dir={tmp_path / 'out'}"]
    with pytest.raises(CurateConfigError, match=r"score\.text_area\.model_path=None: needs an existing local path"):
        load_config([*base, "score.scorers=[text_area]"])
    with pytest.raises(CurateConfigError, match=r"score\.clip_similarity\.model_path='/nowhere'"):
        load_config([*base, "score.scorers=[clip_similarity]", "score.clip_similarity.model_path=/nowhere"])
    with pytest.raises(CurateConfigError, match=r"clip_similarity compares each clip with its caption"):
        load_config([*base, f"score.scorers=[clip_similarity]", "stages=[probe,split,score]",
                     f"score.clip_similarity.model_path={tmp_path}"])
    # A re-selection loads no model, so it needs no weights.
    assert load_config([f"output_dir={tmp_path}", "stages=[select,shard]", "score.scorers=[text_area]"])
    with pytest.raises(FileNotFoundError, match=r"score\.text_area\.model_path='/nowhere.onnx'"):
        TextArea(TextAreaConfig(model_path="/nowhere.onnx"))
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match=r"score\.text_area\.model_path='.*bad\.onnx': OpenCV cannot read"):
        TextArea(TextAreaConfig(model_path=str(tmp_path / "bad.onnx")))
