"""A tiny T5 text encoder in the diffusers pipeline layout, built offline from a list of captions.

Used by the demo (its captions) and by the tests: no model hub. The tokenizer is a sentencepiece
unigram model trained here on the captions, with T5's special ids (pad 0, EOS 1, unk 2); the encoder
is a randomly initialised ``T5EncoderModel`` (T5 v1.1 layout). Random weights still map each token
sequence to distinct states, which is all a DiT needs to learn to follow the captions.

transformers 5's ``T5Tokenizer(vocab_file=...)`` ignores the file, so the tokenizer is saved as
``spiece.model`` + config and must be loaded with ``from_pretrained`` on the folder.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence


def build_tiny_t5(folder: Path, captions: Sequence[str], vocab_size: int, d_model: int = 32,
                  seed: int = 0, model_type: str = "unigram") -> Path:
    """Write ``folder/text_encoder`` (safetensors) and ``folder/tokenizer``; returns ``folder``.

    ``vocab_size`` must not exceed what the captions allow (sentencepiece refuses, saying the most).
    ``model_type`` is sentencepiece's: "unigram" (T5's own) or "bpe", which on a small closed set of
    captions merges up to whole words once the vocabulary is large enough.
    """
    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5EncoderModel

    tokenizer_dir, encoder_dir = folder / "tokenizer", folder / "text_encoder"
    tokenizer_dir.mkdir(parents=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(captions), model_writer=model, vocab_size=vocab_size,
                                   model_type=model_type, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2, num_threads=1)
    (tokenizer_dir / "spiece.model").write_bytes(model.getvalue())
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512,
         "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}))

    torch.manual_seed(seed)
    config = T5Config(d_model=d_model, num_layers=2, num_heads=2, d_kv=d_model // 2, d_ff=2 * d_model,
                      vocab_size=vocab_size, feed_forward_proj="gated-gelu", dropout_rate=0.0)  # gated-gelu: v1.1
    T5EncoderModel(config).save_pretrained(encoder_dir)
    return folder
