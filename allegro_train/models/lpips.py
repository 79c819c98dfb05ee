"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), the VGG16 variant of the ``lpips`` package (v0.1), loaded from one local file.

    x, y [N, 3, H, W] in [-1, 1] -> (x - shift) / scale -> VGG16 features at relu1_2, relu2_2,
    relu3_3, relu4_3, relu5_3 -> unit length along channels -> squared difference
    -> 1x1 conv head per layer (one output) -> mean over H, W -> sum over the five layers -> [N]

Weights file (``LPIPS.from_file``): one ``.safetensors`` holding torchvision's VGG16 feature
weights under their torchvision names (``features.{0,2,5,...,28}.weight`` / ``.bias``, the 13
convs) and the lpips package's heads under its names (``lin{0..4}.model.1.weight``, [1, C, 1, 1]).
``convert`` builds it from the two files those projects distribute (torchvision's
``vgg16-397923af.pth`` and lpips's ``weights/v0.1/vgg.pth``), read with ``weights_only=True``:

    python -m allegro_train.models.lpips VGG16.pth LPIPS_VGG.pth out/lpips_vgg.safetensors

Nothing is downloaded. The package itself is not used because it builds VGG16 through
torchvision, which fetches ImageNet weights from the internet at construction.
"""

from __future__ import annotations

import os
import sys

import torch
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import nn

# torchvision's VGG16 "D" layout: conv widths, "M" a 2x2 max-pool. Its ``features`` Sequential
# numbers every conv, ReLU and pool; LPIPS reads the ReLU after the last conv of each of the
# five blocks (indices 3, 8, 15, 22, 29) and never uses the final pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)
WIDTHS = (64, 128, 256, 512, 512)
# The package's ScalingLayer: ImageNet statistics expressed for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for width in _VGG16:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
    return nn.Sequential(*layers)  # indices 0..29, as torchvision's features[:30]


class _Head(nn.Module):
    """A bias-free 1x1 conv to one channel; ``model.1`` keeps the package's key (its index 0 is a dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit length along channels, as the package's ``normalize_tensor`` (eps outside the root)."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = _vgg16_features()
        for k, width in enumerate(WIDTHS):
            self.add_module(f"lin{k}", _Head(width))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LPIPS":
        """Frozen, in eval mode, from the safetensors file described in the module docstring."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no LPIPS weights file (VGG16 features + lin heads, .safetensors)")
        model = cls()
        state = load_file(str(path))
        expected, found = set(model.state_dict()), set(state)
        if expected != found:
            raise KeyError(f"{path}: not LPIPS-VGG weights; missing keys {sorted(expected - found)}, "
                           f"unexpected keys {sorted(found - expected)}")
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped VGG activations of x [N, 3, H, W] in [-1, 1]."""
        h = (x - self.shift) / self.scale
        taps = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                taps.append(h)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image pair: x, y [N, 3, H, W] in [-1, 1] -> [N]."""
        total = x.new_zeros(x.shape[0])
        for k, (fx, fy) in enumerate(zip(self.layers(x), self.layers(y))):
            diff = (_unit(fx) - _unit(fy)).square()  # [N, C_k, H_k, W_k]
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        return total

    def video(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over frames: x, y [B, 3, T, H, W] -> [B]."""
        frames = x.shape[2]
        per_frame = self(rearrange(x, "b c t h w -> (b t) c h w"), rearrange(y, "b c t h w -> (b t) c h w"))
        return rearrange(per_frame, "(b t) -> b t", t=frames).mean(dim=1)


def convert(vgg16_path: str | os.PathLike, heads_path: str | os.PathLike, out: str | os.PathLike) -> None:
    """torchvision's VGG16 state dict + the lpips package's ``vgg.pth`` -> one ``LPIPS.from_file`` file."""
    vgg = torch.load(vgg16_path, map_location="cpu", weights_only=True)
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    wanted = set(LPIPS().state_dict())
    state = {k: v.float().contiguous() for k, v in {**vgg, **heads}.items() if k in wanted}
    missing = sorted(wanted - set(state))
    if missing:
        raise KeyError(f"{vgg16_path} + {heads_path}: keys missing for LPIPS-VGG: {missing}")
    save_file(state, str(out))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m allegro_train.models.lpips VGG16.pth LPIPS_VGG.pth OUT.safetensors")
    convert(*sys.argv[1:])
