"""Captions from a vision-language model: a transformers image-text-to-text model from a local folder.

Any model ``AutoModelForImageTextToText`` and ``AutoProcessor`` load with a chat template works
(LLaVA, LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL, Idefics, ...). A clip is shown as ``num_frames``
evenly sampled frames, passed as that many images in one user turn before the prompt: every such
model accepts several images, while native video inputs differ from model to model. Clips are
captioned ``batch_size`` at a time with greedy decoding (left padding, so each prompt ends where
generation starts); the model's own ``generation_config.json`` supplies the rest (stop tokens,
suppressed tokens). An empty answer leaves the clip uncaptioned rather than captioned "".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from data_recipes.captioners.base import Captioner
from data_recipes.config import Dtype, VLMConfig, local_path
from data_recipes.media import sample_frames
from data_recipes.records import ClipRecord


class VLMCaptioner(Captioner):
    name = "vlm"

    def __init__(self, cfg: VLMConfig):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = local_path("caption.vlm.path", cfg.path)
        self.cfg = cfg
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, dtype=getattr(torch, Dtype(cfg.dtype).value)).to(cfg.device).eval()

    def caption(self, source_path: Path, clips: list[ClipRecord], output_dir: Path) -> list[Optional[str]]:
        captions: list[Optional[str]] = []
        for start in range(0, len(clips), self.cfg.batch_size):
            batch = clips[start:start + self.cfg.batch_size]
            frames = [sample_frames(output_dir / c.clip_path, self.cfg.num_frames, c.num_frames, self.cfg.short_side).frames
                      for c in batch]
            captions += self.describe(frames)
        return captions

    def _prompt(self, num_images: int) -> str:
        content: list[dict[str, Any]] = [{"type": "image"}] * num_images + [{"type": "text", "text": self.cfg.prompt}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    @torch.inference_mode()
    def describe(self, clips_frames: list[np.ndarray]) -> list[Optional[str]]:
        """One caption (or None) a clip, from its frames (uint8 [N, H, W, 3] RGB each), in one generate call."""
        inputs = self.processor(text=[self._prompt(len(f)) for f in clips_frames], images=[list(f) for f in clips_frames],
                                return_tensors="pt", padding=True).to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        if not self.model.config.is_encoder_decoder:  # decoder-only models echo the prompt first
            out = out[:, inputs["input_ids"].shape[1]:]
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [text.strip() or None for text in texts]
