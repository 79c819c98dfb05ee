"""Each scorer on frames made to order: the value, or the order of two values, it must give."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from data_recipes.config import AestheticConfig, CurateConfigError, load_config
from data_recipes.media import ClipFrames
from data_recipes.scorers import build_scorers
from data_recipes.scorers.aesthetic import Aesthetic
from data_recipes.scorers.black_border import BlackBorder
from data_recipes.scorers.brightness import Brightness
from data_recipes.scorers.clarity import Clarity
from data_recipes.scorers.frame_diff import FrameDiff
from data_recipes.scorers.motion import Motion

H, W, N = 96, 128, 4


def texture(seed: int = 0, blur: float = 2.0) -> np.ndarray:
    """A smooth random RGB texture [H + 16, W + 16, 3] (room to shift it for motion)."""
    noise = np.random.default_rng(seed).uniform(0, 255, (H + 16, W + 16, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), blur) * 3 - 255, 0, 255).astype(np.uint8)


def clip(frames: list[np.ndarray], next_frames: list[np.ndarray] | None = None) -> ClipFrames:
    return ClipFrames(frames=np.stack(frames), next_frames=np.stack(next_frames or frames), fps=25.0)


def test_brightness_black_grey_white():
    values = [Brightness()(clip([np.full((H, W, 3), v, np.uint8)] * N)) for v in (0, 128, 255)]
    assert values == pytest.approx([0, 128, 255], abs=0.5)


def test_black_border_measures_letterbox_and_pillarbox():
    picture = texture()[:H, :W] | 64  # no pixel near black
    assert BlackBorder()(clip([picture] * N)) == 0
    letterbox = picture.copy()
    letterbox[:12], letterbox[-12:] = 0, 0
    assert BlackBorder()(clip([letterbox] * N)) == pytest.approx(24 / H)
    pillarbox = picture.copy()
    pillarbox[:, :16] = 0
    assert BlackBorder()(clip([pillarbox] * N)) == pytest.approx(16 / W)
    assert BlackBorder()(clip([np.zeros((H, W, 3), np.uint8)] * N)) == 1


def test_clarity_ranks_sharp_above_blurred():
    sharp = texture(blur=0.7)[:H, :W]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.5)
    assert Clarity()(clip([sharp] * N)) > 5 * Clarity()(clip([blurred] * N))


def test_motion_and_frame_diff_rank_moving_above_static():
    base = texture()
    still = [base[8:8 + H, 8:8 + W]] * N
    # Each sample's next frame is the texture moved 2 px right; the samples drift 4 px apart.
    moving = [base[8:8 + H, 8 + 4 * i:8 + 4 * i + W] for i in range(N - 2)]
    moved = [base[8:8 + H, 6 + 4 * i:6 + 4 * i + W] for i in range(N - 2)]
    assert Motion()(clip(still)) < 0.05
    assert Motion()(clip(moving, moved)) == pytest.approx(2.0, abs=0.5)
    assert FrameDiff()(clip(still)) == 0
    assert FrameDiff()(clip(moving, moved)) > 5


@pytest.fixture(scope="module")
def tiny_aesthetic(tmp_path_factory: pytest.TempPathFactory) -> AestheticConfig:
    """A randomly initialised 2-layer CLIP vision tower and a LAION-layout MLP head, as safetensors."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=16)
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip", safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    # LAION's key layout: Linear layers at 0, 2, 4, 6, 7 (dropouts between carry no weights).
    sizes = [(16, 12), (12, 8), (8, 6), (6, 4), (4, 1)]
    head = {}
    for index, (fan_in, fan_out) in zip((0, 2, 4, 6, 7), sizes):
        head[f"layers.{index}.weight"] = torch.randn(fan_out, fan_in)
        head[f"layers.{index}.bias"] = torch.randn(fan_out)
    save_file(head, str(root / "head.safetensors"))
    return AestheticConfig(embedder_path=str(root / "clip"), head_path=str(root / "head.safetensors"))


def test_aesthetic_is_the_head_on_normalised_clip_embeddings(tiny_aesthetic: AestheticConfig):
    scorer = Aesthetic(tiny_aesthetic)
    frames = clip([texture(s)[:H, :W] for s in range(N)])
    value = scorer(frames)
    with torch.no_grad():
        pixels = scorer.processor(images=list(frames.frames), return_tensors="pt")["pixel_values"]
        embeds = torch.nn.functional.normalize(scorer.embedder(pixel_values=pixels).image_embeds, dim=-1)
        weights = [(scorer.head[i].weight, scorer.head[i].bias) for i in range(len(scorer.head))]
        expected = embeds
        for weight, bias in weights:
            expected = expected @ weight.T + bias
    assert value == pytest.approx(expected.mean().item(), rel=1e-5)
    assert len(scorer.head) == 5 and scorer(frames) == value  # deterministic in eval mode


def test_aesthetic_paths_are_checked_with_the_key_named(tiny_aesthetic: AestheticConfig, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"score\.aesthetic\.head_path='/nowhere/head.safetensors'"):
        Aesthetic(AestheticConfig(embedder_path=tiny_aesthetic.embedder_path, head_path="/nowhere/head.safetensors"))
    with pytest.raises(CurateConfigError, match=r"score\.aesthetic\.embedder_path=None"):
        load_config([f"input_dir={tmp_path}", f"output_dir={tmp_path}", "score.scorers=[aesthetic]"])
    save_file({"layers.0.weight": torch.zeros(1, 8), "layers.0.bias": torch.zeros(1)}, str(tmp_path / "h.safetensors"))
    with pytest.raises(ValueError, match="takes 8-d embeddings .* gives 16-d"):
        Aesthetic(AestheticConfig(embedder_path=tiny_aesthetic.embedder_path, head_path=str(tmp_path / "h.safetensors")))


def test_config_refuses_unknown_scorers(tmp_path: Path):
    with pytest.raises(CurateConfigError, match=r"score\.scorers\[0\]='sharpness': unknown scorer"):
        load_config([f"output_dir={tmp_path}", "stages=[select]", "score.scorers=[sharpness]"])
    assert [s.name for s in build_scorers(load_config([f"output_dir={tmp_path}", "stages=[select]"]).score)] == \
        ["brightness", "black_border", "clarity", "motion", "frame_diff"]
