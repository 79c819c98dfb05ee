"""T5TextEncoder: the frozen T5 encoder whose last hidden states the Allegro DiT cross-attends to.

    captions (list[str]) --sentencepiece, + EOS, <= max_length--> ids [B, L]
        --T5EncoderModel--> states [B, L, D] (zeros at padding), mask [B, L]

L is the longest caption's token count in the batch (EOS included), not ``max_length``: the
released pipeline pads to 512, but masked positions never reach the DiT's cross-attention, and a
shorter L lets the precompute store unpadded states (docs/data_format.md). The model and the
tokenizer are transformers' own (``T5EncoderModel``, ``T5Tokenizer``), loaded from local folders
only; weights are read from safetensors, never from pickled ``.bin`` files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from allegro_train.models.text.clean import clean_caption

log = logging.getLogger(__name__)

_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_TOKENIZER_FILES = ("spiece.model", "tokenizer.json")
_LAYOUT = ("expected a diffusers pipeline folder holding text_encoder/ (T5EncoderModel) and tokenizer/ "
           "(T5Tokenizer), or one folder holding both the T5 checkpoint and its tokenizer")


def resolve_folders(folder: str | os.PathLike) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder) in ``folder``; ``FileNotFoundError`` / ``ValueError`` naming
    the path and what is missing, so a wrong path fails before transformers reads anything."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; {_LAYOUT}")
    if (root / "text_encoder").exists() or (root / "tokenizer").exists():
        encoder, tokenizer = root / "text_encoder", root / "tokenizer"
        for sub in (encoder, tokenizer):
            if not sub.is_dir():
                raise FileNotFoundError(f"{sub}: missing; {_LAYOUT}")
    else:
        encoder = tokenizer = root

    config_path = encoder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; {_LAYOUT}")
    with open(config_path) as f:
        config = json.load(f)
    if config.get("model_type") != "t5":
        raise ValueError(f"{config_path}: model_type is {config.get('model_type')!r}, expected 't5' (T5 v1.1 encoder)")
    if not any((encoder / name).is_file() for name in _WEIGHTS):
        pickled = sorted(p.name for p in encoder.glob("*.bin")) + sorted(p.name for p in encoder.glob("*.pt"))
        hint = (f"; found pickled weights {pickled}, which are never loaded: convert them to safetensors "
                f"(T5EncoderModel.from_pretrained(...).save_pretrained(...) in a trusted environment)") if pickled else ""
        raise FileNotFoundError(f"{encoder}: no {' or '.join(_WEIGHTS)}{hint}")
    if not any((tokenizer / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(f"{tokenizer}: no {' or '.join(_TOKENIZER_FILES)}; {_LAYOUT}")
    return encoder, tokenizer


class T5TextEncoder:
    """A frozen ``T5EncoderModel`` and its tokenizer; ``encode`` turns captions into (states, mask).

    Not an ``nn.Module``: it is never trained, saved in a checkpoint or wrapped by DeepSpeed.
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 512):
        if max_length < 1:
            raise ValueError(f"max_length={max_length}: must be >= 1 (Allegro uses 512)")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, max_length: int = 512, dtype: torch.dtype = torch.bfloat16,
                        device: str | torch.device = "cpu") -> "T5TextEncoder":
        """Load from a local folder (see ``resolve_folders``). The released pipeline runs T5 in bf16."""
        encoder_dir, tokenizer_dir = resolve_folders(folder)
        from transformers import AutoTokenizer, T5EncoderModel  # lazy: allegro_train.models needs torch alone

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        model = T5EncoderModel.from_pretrained(encoder_dir, dtype=dtype, use_safetensors=True, local_files_only=True)
        if len(tokenizer) > model.config.vocab_size:
            raise ValueError(f"{tokenizer_dir}: the tokenizer has {len(tokenizer)} tokens, more than the vocab_size "
                             f"{model.config.vocab_size} of {encoder_dir / 'config.json'}: they do not belong together")
        return cls(model.to(device), tokenizer, max_length)

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, captions: Sequence[str], clean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> states [B, L, D] in the model's dtype (zeros at padding), mask long [B, L].

        ``clean`` applies ``clean_caption`` first. Otherwise captions go to the tokenizer verbatim;
        note that the released pipeline lower-cases and strips prompts even without cleaning.
        Captions longer than ``max_length`` tokens are cut (EOS kept), with a warning.
        """
        if isinstance(captions, str) or not captions:
            raise ValueError(f"captions={captions!r}: expected a non-empty list of str")
        for i, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise TypeError(f"captions[{i}] is a {type(caption).__name__} ({caption!r}), expected str")
        texts = [clean_caption(c) for c in captions] if clean else list(captions)
        self._warn_truncated(texts)
        tokens = self.tokenizer(texts, padding="longest", max_length=self.max_length, truncation=True,
                                return_tensors="pt")
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)  # [B, L]
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, D]
        # T5 computes outputs at padded positions too; zero them so stored or padded states agree.
        return states * mask[..., None].to(states.dtype), mask.long()

    def _warn_truncated(self, texts: list[str]) -> None:
        lengths = [len(ids) for ids in self.tokenizer(texts).input_ids]
        cut = [(i, n) for i, n in enumerate(lengths) if n > self.max_length]
        if cut:
            log.warning("%d of %d captions exceed max_length=%d tokens and are cut (index, tokens): %s",
                        len(cut), len(texts), self.max_length, cut[:5])
