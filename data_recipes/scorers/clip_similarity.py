"""CLIP text-video similarity: how well a clip's caption describes its frames (the report keeps
>= 0.17 for the image and 368p stages, >= 0.20 from 720p on).

The score is the cosine between the caption's CLIP text embedding and the mean of the L2-normalised
image embeddings of ``num_frames`` of the clip's scoring samples (renormalised), on CLIP's raw
cosine scale (not the x100 logits). The model loads from a local transformers folder only
(``CLIPModel`` plus its ``CLIPProcessor``: tokenizer files and ``preprocessor_config.json``). A
clip without a caption gets None (a NULL in the catalog, which the presets count as a fail).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from data_recipes.config import ClipSimilarityConfig, local_path
from data_recipes.media import ClipFrames
from data_recipes.scorers.base import Scorer


class ClipSimilarity(Scorer):
    name = "clip_similarity"

    def __init__(self, cfg: ClipSimilarityConfig):
        from transformers import CLIPModel, CLIPProcessor

        path = local_path("score.clip_similarity.model_path", cfg.model_path)
        self.processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
        # Captions past CLIP's text window (77 tokens for OpenAI's models) are cut, as CLIP was trained.
        self.max_tokens = self.model.config.text_config.max_position_embeddings
        self.num_frames = cfg.num_frames

    @torch.inference_mode()
    def score(self, clip: ClipFrames) -> Optional[float]:
        if not clip.caption:
            return None
        picks = np.linspace(0, len(clip.frames) - 1, min(self.num_frames, len(clip.frames))).round().astype(int)
        inputs = self.processor(text=[clip.caption], images=list(clip.frames[picks]), return_tensors="pt",
                                padding=True, truncation=True, max_length=self.max_tokens)
        out = self.model(**inputs)
        image = torch.nn.functional.normalize(out.image_embeds.mean(dim=0), dim=-1)  # [D]; image_embeds are unit
        text = torch.nn.functional.normalize(out.text_embeds[0], dim=-1)  # [D]
        return float(image @ text)
