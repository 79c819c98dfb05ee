"""Fixtures shared across test folders: a tiny T5 text encoder in the diffusers pipeline layout,
and ``perturb`` (random weights everywhere).

transformers and sentencepiece are imported inside the fixture, so test sessions that never ask
for it do not pay for them.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest

# Captions the tiny sentencepiece model is trained on; tests encode (parts of) these.
_WORDS = (("red", "blue", "green", "small", "bright", "dark", "yellow", "purple", "orange", "white"),
          ("cat", "dog", "car", "bird", "square", "person", "train", "horse", "kitten", "flower", "window", "mountain"),
          ("runs", "flies", "moves", "slides", "jumps", "walks", "spins", "drifts", "rolls"),
          ("field", "street", "screen", "beach", "forest", "city", "river", "garden", "kitchen"))
TRAINING_CAPTIONS = [f"a {c} {t} {m} across the {p}." for c, t, m, p in itertools.product(*_WORDS)]
SPM_VOCAB = 64  # unigram, as T5's own; these words allow at most ~70 pieces


def build_tiny_t5(folder: Path, seed: int = 0) -> Path:
    """Write ``folder/text_encoder`` (T5EncoderModel, d_model 32, safetensors) and ``folder/tokenizer``
    (a sentencepiece unigram model trained here, ids as T5's: pad 0, EOS 1, unk 2). Returns ``folder``.

    transformers 5's ``T5Tokenizer(vocab_file=...)`` ignores the file, so the tokenizer is saved as
    ``spiece.model`` + config and must be loaded with ``from_pretrained``.
    """
    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5EncoderModel

    tokenizer_dir, encoder_dir = folder / "tokenizer", folder / "text_encoder"
    tokenizer_dir.mkdir(parents=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TRAINING_CAPTIONS), model_writer=model,
                                   vocab_size=SPM_VOCAB, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, character_coverage=1.0, minloglevel=2, num_threads=1)
    (tokenizer_dir / "spiece.model").write_bytes(model.getvalue())
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512,
         "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}))

    torch.manual_seed(seed)
    config = T5Config(d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64, vocab_size=SPM_VOCAB,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0)  # gated-gelu: T5 v1.1
    T5EncoderModel(config).save_pretrained(encoder_dir)
    return folder


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline folder with ``text_encoder/`` and ``tokenizer/``; read-only for the tests."""
    return build_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="session")
def perturb():
    """``perturb(model, seed)``: add 0.05 x N(0, 1) to every parameter, in place; returns the model.
    Random weights everywhere, so zero-initialised branches (adaLN-Zero, temporal convs, TI2V's
    condition Linears) cannot hide a difference."""
    import torch

    def apply(model, seed: int):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        return model

    return apply
