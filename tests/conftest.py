"""Fixtures shared across test folders: a tiny T5 text encoder in the diffusers pipeline layout,
and random weights for tiny models.

transformers and sentencepiece are imported inside the fixture, so test sessions that never ask
for it do not pay for them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

# Captions the tiny sentencepiece model is trained on; tests encode (parts of) these.
_WORDS = (("red", "blue", "green", "small", "bright", "dark", "yellow", "purple", "orange", "white"),
          ("cat", "dog", "car", "bird", "square", "person", "train", "horse", "kitten", "flower", "window", "mountain"),
          ("runs", "flies", "moves", "slides", "jumps", "walks", "spins", "drifts", "rolls"),
          ("field", "street", "screen", "beach", "forest", "city", "river", "garden", "kitchen"))
TRAINING_CAPTIONS = [f"a {c} {t} {m} across the {p}." for c, t, m, p in itertools.product(*_WORDS)]
SPM_VOCAB = 64  # unigram, as T5's own; these words allow at most ~70 pieces


def build_tiny_t5(folder: Path, seed: int = 0) -> Path:
    """``folder/text_encoder`` (d_model 32) + ``folder/tokenizer`` trained on ``TRAINING_CAPTIONS``."""
    from allegro_train.demo.text import build_tiny_t5 as build

    return build(folder, TRAINING_CAPTIONS, SPM_VOCAB, d_model=32, seed=seed)


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline folder with ``text_encoder/`` and ``tokenizer/``; read-only for the tests."""
    return build_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere: zero-initialised branches (adaLN-Zero, temporal convs) would hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model
