"""Model FLOPs of the DiT, for MFU. Derivation and the 79,200-token numbers: docs/dit.md.

Counts multiply-adds of matrix products as 2 FLOPs each (elementwise ops, norms and softmax are
left out, as MFU conventions do); backward costs twice the forward, so a training step is 3x.
"""

from __future__ import annotations

from allegro_train.models.dit.config import DiTConfig


def dit_forward_flops(config: DiTConfig, grid: tuple[int, int, int], text_len: int, batch: int = 1) -> int:
    """FLOPs of one forward over latents of ``grid`` = (T, H, W) with ``text_len`` text tokens."""
    t, h, w = grid
    p = config.patch_size
    n = t * (h // p) * (w // p)  # video tokens
    d = config.inner_dim
    per_block = (
        2 * n * d * d * 4  # self-attention q, k, v, out projections
        + 2 * n * n * d * 2  # Q K^T and (softmax) V over all heads
        + 2 * n * d * d * 2  # cross-attention q and out projections
        + 2 * text_len * d * d * 2  # cross-attention k, v projections of the text
        + 2 * n * text_len * d * 2  # cross-attention Q K^T and V
        + 2 * n * d * 4 * d * 2  # FFN, two Linears with 4x hidden
    )
    embed = (
        2 * n * config.in_channels * p * p * d  # patch embedding
        + 2 * text_len * (config.caption_channels * d + d * d)  # caption projection
        + 2 * (256 * d + d * d + d * 6 * d)  # timestep MLP and adaLN-single
        + 2 * n * d * p * p * config.out_channels  # proj_out
    )
    return batch * (config.num_layers * per_block + embed)


def dit_train_flops(config: DiTConfig, grid: tuple[int, int, int], text_len: int, batch: int = 1) -> int:
    """FLOPs of forward + backward (3x forward), the numerator of MFU."""
    return 3 * dit_forward_flops(config, grid, text_len, batch)
