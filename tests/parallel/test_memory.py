"""The activation formula of parallel/memory.py against what autograd really saves (CPU)."""

from __future__ import annotations

import pytest
import torch

from allegro_train.models.dit import AllegroDiT, dit_config
from allegro_train.parallel.memory import (SavedActivations, block_bytes_per_token, rope_bytes,
                                           saved_activation_bytes)

CONFIG = dit_config("allegro-debug", num_attention_heads=4, attention_head_dim=24, num_layers=3,
                    cross_attention_dim=96, caption_channels=32)


def measured(dtype: torch.dtype, grid, text_len: int, batch: int, checkpointing: str) -> int:
    torch.manual_seed(0)
    model = AllegroDiT(CONFIG).to(dtype)
    model.set_activation_checkpointing(checkpointing)
    latents = torch.randn(batch, CONFIG.in_channels, *grid, dtype=dtype)
    text = torch.randn(batch, text_len, CONFIG.caption_channels, dtype=dtype)
    mask = torch.ones(batch, text_len)
    mask[:, text_len // 2:] = 0
    with SavedActivations(model) as saved:
        model(latents, torch.tensor([10] * batch), text, mask)
    return saved.bytes


@pytest.mark.parametrize("dtype, act", [(torch.float32, 4), (torch.bfloat16, 2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("checkpointing", ["none", "all", "every_2"])
@pytest.mark.parametrize("grid, text_len, batch", [((2, 8, 8), 8, 1), ((3, 6, 10), 12, 2)])
def test_saved_activations_equal_the_formula(dtype, act, checkpointing, grid, text_len, batch):
    tokens = grid[0] * (grid[1] // 2) * (grid[2] // 2)
    predicted = saved_activation_bytes(CONFIG, tokens, text_len, batch, checkpointing, act)
    if checkpointing == "all":  # RoPE tables reach the checkpoints as plain arguments: resident, not "saved"
        predicted -= rope_bytes(CONFIG, tokens)
    assert predicted == measured(dtype, grid, text_len, batch, checkpointing)


def test_released_block_keeps_115_kb_a_token_in_bf16():
    """The 2.8B block (D 2304, 24 heads): 50 D + 8 H + 16 bytes a token, what docs/parallelism.md uses."""
    assert block_bytes_per_token(dit_config("allegro-2.8b"), act=2) == 50 * 2304 + 8 * 24 + 16 == 115_408
