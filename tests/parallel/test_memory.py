"""The activation formula of parallel/memory.py against what autograd really saves (CPU)."""

from __future__ import annotations

import pytest
import torch

from allegro_train.models.dit import AllegroDiT, dit_config
from allegro_train.parallel.memory import (SavedActivations, block_bytes_per_token, kept_attention_bytes_per_token,
                                           rope_bytes, saved_activation_bytes)

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
        out = model(latents, torch.tensor([10] * batch), text, mask)
        saved.count_checkpoint_caches()  # "selective": the kept attention outputs, while the graph lives
    del out
    return saved.bytes


@pytest.mark.parametrize("dtype, act", [(torch.float32, 4), (torch.bfloat16, 2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("checkpointing", ["none", "all", "every_2", "selective"])
@pytest.mark.parametrize("grid, text_len, batch", [((2, 8, 8), 8, 1), ((3, 6, 10), 12, 2)])
def test_saved_activations_equal_the_formula(dtype, act, checkpointing, grid, text_len, batch):
    tokens = grid[0] * (grid[1] // 2) * (grid[2] // 2)
    predicted = saved_activation_bytes(CONFIG, tokens, text_len, batch, checkpointing, act)
    if checkpointing in ("all", "selective"):  # RoPE tables reach the checkpoints as plain arguments:
        predicted -= rope_bytes(CONFIG, tokens)  # resident, not "saved"
    assert predicted == measured(dtype, grid, text_len, batch, checkpointing)


def test_selective_keeps_more_than_all_and_less_than_none():
    grid, text_len, batch = (3, 6, 10), 12, 2
    none, selective, every = (measured(torch.float32, grid, text_len, batch, policy)
                              for policy in ("none", "selective", "all"))
    assert every < selective < none


def test_released_block_keeps_115_kb_a_token_in_bf16():
    """The 2.8B block (D 2304, 24 heads): 50 D + 8 H + 16 bytes a token, what docs/parallelism.md uses."""
    assert block_bytes_per_token(dit_config("allegro-2.8b"), act=2) == 50 * 2304 + 8 * 24 + 16 == 115_408


def test_selective_keeps_a_third_of_no_checkpointing_at_79200_tokens():
    """The 2.8B model, bf16, 512 text tokens: "selective" keeps input + two attention outputs + lse
    per token and block (14,016 bytes; 4,608 with "all", 115,408 with "none")."""
    config, tokens = dit_config("allegro-2.8b"), 22 * 45 * 80
    saved = {policy: saved_activation_bytes(config, tokens, 512, 1, policy, 2) / 2**30
             for policy in ("none", "all", "selective")}
    assert kept_attention_bytes_per_token(config, 2) + 2 * 2304 == 14_016
    assert saved["all"] < saved["selective"] < saved["none"] / 3
