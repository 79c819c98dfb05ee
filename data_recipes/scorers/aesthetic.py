"""LAION-style aesthetic predictor: an MLP head on L2-normalised CLIP image embeddings (1-10 scale).

Both parts load from local paths only: the CLIP vision tower from a transformers folder
(``CLIPVisionModelWithProjection`` plus its ``preprocessor_config.json``) and the head from a
safetensors file holding ``layers.{i}.weight`` / ``layers.{i}.bias`` for each Linear, in index
order, the key layout of LAION's improved-aesthetic-predictor (convert its .pth once; nothing here
unpickles). The clip's score is the mean over its sampled frames.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from data_recipes.config import AestheticConfig, local_path
from data_recipes.media import ClipFrames
from data_recipes.scorers.base import Scorer

_ACTIVATIONS = {"none": None, "relu": nn.ReLU, "gelu": nn.GELU}


def load_head(path: Path, activation: str = "none") -> nn.Sequential:
    """The MLP head in ``path`` as Linear layers (with ``activation`` between them), in eval mode."""
    state = load_file(str(path))
    indices = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"layers\.(\d+)\.weight", k))})
    if not indices:
        raise ValueError(f"{path}: no 'layers.<i>.weight' tensors; found keys {sorted(state)[:8]}")
    layers: list[nn.Module] = []
    for n, i in enumerate(indices):
        weight = state[f"layers.{i}.weight"]
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=f"layers.{i}.bias" in state)
        linear.load_state_dict({"weight": weight, **({"bias": state[f"layers.{i}.bias"]} if linear.bias is not None else {})})
        layers.append(linear)
        if n < len(indices) - 1 and _ACTIVATIONS[activation] is not None:
            layers.append(_ACTIVATIONS[activation]())
    if layers[-1].out_features != 1:
        raise ValueError(f"{path}: the last layer gives {layers[-1].out_features} outputs, an aesthetic score is 1")
    return nn.Sequential(*layers).eval()


class Aesthetic(Scorer):
    name = "aesthetic"

    def __init__(self, cfg: AestheticConfig):
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        for key in ("embedder_path", "head_path"):
            local_path(f"score.aesthetic.{key}", getattr(cfg, key))
        self.processor = CLIPImageProcessor.from_pretrained(cfg.embedder_path, local_files_only=True)
        self.embedder = CLIPVisionModelWithProjection.from_pretrained(cfg.embedder_path, local_files_only=True).eval()
        self.head = load_head(Path(cfg.head_path), cfg.activation)
        dim = self.embedder.config.projection_dim
        if self.head[0].in_features != dim:
            raise ValueError(f"score.aesthetic.head_path={cfg.head_path!r} takes {self.head[0].in_features}-d "
                             f"embeddings but score.aesthetic.embedder_path={cfg.embedder_path!r} gives {dim}-d")

    @torch.inference_mode()
    def score(self, clip: ClipFrames) -> float:
        pixels = self.processor(images=list(clip.frames), return_tensors="pt")["pixel_values"]
        embeds = self.embedder(pixel_values=pixels).image_embeds  # [N, D]
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        return float(np.mean(self.head(embeds.float()).squeeze(-1).numpy()))
