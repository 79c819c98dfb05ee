"""LoRA fine-tuning of the DiT with peft, exported merged (diffusers layout) or as adapters.

peft wraps each targeted Linear (``to_q`` ...) so its state-dict keys become ``to_q.base_layer.*``
plus ``to_q.lora_A.default.weight`` [r, in] and ``to_q.lora_B.default.weight`` [out, r]; the
functions here turn such a state dict back into the plain layout, with
``W' = W + (alpha / r) * B @ A`` folded in, or into peft's adapter files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

ADAPTER = "default"


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: list[str]) -> nn.Module:
    """Freeze ``model`` and add trainable rank-``rank`` adapters to the ``targets`` Linears (B starts at 0)."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    return inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets)), model)


def merged_state_dict(state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """A LoRA-wrapped state dict -> the plain model's, adapters folded into the base weights."""
    scale = alpha / rank
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_A." in key or ".lora_B." in key:
            continue
        if ".base_layer." in key:
            prefix, name = key.split(".base_layer.")
            if name == "weight":
                down = state[f"{prefix}.lora_A.{ADAPTER}.weight"].float()  # [r, in]
                up = state[f"{prefix}.lora_B.{ADAPTER}.weight"].float()  # [out, r]
                value = (value.float() + scale * up @ down).to(value.dtype)
            key = f"{prefix}.{name}"
        merged[key] = value
    return merged


def save_adapters(state: dict[str, torch.Tensor], folder: str | os.PathLike, rank: int, alpha: float,
                  targets: list[str]) -> None:
    """peft's adapter layout: ``adapter_model.safetensors`` (keys without the adapter name) + config."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    adapters = {k.replace(f".{ADAPTER}.", "."): v.contiguous() for k, v in state.items()
                if ".lora_A." in k or ".lora_B." in k}
    save_file(adapters, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(targets),
              "lora_dropout": 0.0, "bias": "none", "base_model_name_or_path": None}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
