"""3D rotary position embedding over (t, h, w), as the released Allegro model applies it.

The head dim is split in three equal parts for t, y and x. Each part uses rotate-half
(non-interleaved) RoPE with theta 10000 over integer positions divided by the axis's
``interpolation_scale``, which is how the 88-frame 720p model stretches positions it was
trained on at lower resolution.
"""

from __future__ import annotations

import torch


def axis_angles(length: int, dim: int, scale: float, theta: float, device: torch.device | None) -> torch.Tensor:
    """[length, dim] fp32 rotation angles for one axis, frequencies repeated as [f, f] (rotate-half)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))  # [dim/2]
    positions = torch.arange(length, dtype=torch.float32, device=device) / scale
    angles = torch.outer(positions, inv_freq)  # [length, dim/2]
    return torch.cat([angles, angles], dim=-1)


def rope_tables(
    grid: tuple[int, int, int],
    head_dim: int,
    scales: tuple[float, float, float],
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [T*H*W, head_dim] (fp32) for tokens in (t, h, w) order."""
    axis_dim = head_dim // 3
    parts = []
    for axis, (length, scale) in enumerate(zip(grid, scales)):
        angles = axis_angles(length, axis_dim, scale, theta, device)  # [length, axis_dim]
        shape = [1, 1, 1, axis_dim]
        shape[axis] = length
        parts.append(angles.view(shape).expand(*grid, axis_dim))
    angles = torch.cat(parts, dim=-1).reshape(-1, 3 * axis_dim)  # [N, head_dim]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, N, heads, head_dim] by tables [N, head_dim]; math in fp32, result in x.dtype."""
    x32 = x.float()
    # rotate-half within each of the three axis parts: (a, b) -> (-b, a)
    halves = x32.unflatten(-1, (3, 2, -1))  # [B, N, heads, 3, 2, axis_dim/2]
    rotated = torch.stack([-halves[..., 1, :], halves[..., 0, :]], dim=-2).flatten(-3)
    out = x32 * cos[:, None, :] + rotated * sin[:, None, :]
    return out.to(x.dtype)
