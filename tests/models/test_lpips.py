"""LPIPS-VGG from a local weights file: the lpips package's value, the formula by hand, clear errors.

Trunk weights are random (ImageNet VGG16 weights cannot be fetched here); the heads are the lpips
package's real ``vgg.pth`` where the package is installed (CI installs it with --no-deps).
"""

from __future__ import annotations

import functools
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from allegro_train.models.lpips import LPIPS, SCALE, SHIFT, TAPS, convert


@functools.lru_cache(maxsize=None)
def random_vgg_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision-named VGG16 feature weights (He-scaled, so activations neither vanish nor explode)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    with torch.device("meta"):
        shapes = LPIPS().state_dict()
    for name, tensor in shapes.items():
        if name.startswith("features."):
            fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
            state[name] = torch.randn(tensor.shape, generator=g) * (2.0 / fan_in) ** 0.5 * (tensor.ndim > 1)
    return state


def random_heads(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.1
            for k, c in enumerate((64, 128, 256, 512, 512))}


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "lpips_vgg.safetensors"
    save_file({**random_vgg_state(), **random_heads()}, str(path))
    return path


def test_lpips_matches_the_formula_by_hand(weights_file):
    model = LPIPS.from_file(weights_file)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1

    # Zhang et al.: sum over layers of spatial means of w_l . (unit(f_l(x)) - unit(f_l(y)))^2
    state = {**random_vgg_state(), **random_heads()}
    convs = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})

    def features(v):
        v = (v - torch.tensor(SHIFT).view(1, 3, 1, 1)) / torch.tensor(SCALE).view(1, 3, 1, 1)
        taps = []
        for i in range(TAPS[-1] + 1):
            if i in convs:
                v = F.conv2d(v, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1)
            elif i - 1 in convs:
                v = v.clamp(min=0)
            else:
                v = F.max_pool2d(v, 2)
            if i in TAPS:
                taps.append(v)
        return taps

    expected = torch.zeros(2)
    for k, (fx, fy) in enumerate(zip(features(x), features(y))):
        ux = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
        uy = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
        w = state[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
        expected += (w * (ux - uy).square()).sum(1).mean(dim=(1, 2))
    with torch.no_grad():
        got = model(x, y)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
        assert (got > 0).all()
        assert torch.equal(model(x, x), torch.zeros(2))
        torch.testing.assert_close(model(y, x), got, rtol=1e-6, atol=0)
        video = torch.stack([x, y], dim=2)  # [2, 3, T=2, 16, 16]: frame 0 vs itself, frame 1 vs x
        torch.testing.assert_close(model.video(video, torch.stack([x, x], dim=2)), model(y, x) / 2)
    assert not any(p.requires_grad for p in model.parameters())


def test_lpips_equals_the_lpips_package(tmp_path, monkeypatch):
    """The package's own network with the same trunk weights and its published VGG heads."""
    vgg_layers = LPIPS().features  # stands in for torchvision's vgg16().features (same layout)
    stub = types.ModuleType("torchvision")
    stub.models = types.SimpleNamespace(vgg16=lambda pretrained=False, **_: types.SimpleNamespace(features=vgg_layers))
    monkeypatch.setitem(sys.modules, "torchvision", stub)
    monkeypatch.setitem(sys.modules, "torchvision.models", stub.models)
    lpips = pytest.importorskip("lpips")  # CI: pip install --no-deps lpips scipy
    import importlib.resources

    heads = importlib.resources.files("lpips") / "weights" / "v0.1" / "vgg.pth"
    torch.save({"features." + k.split(".", 1)[1]: v for k, v in random_vgg_state().items()}, tmp_path / "vgg16.pth")
    convert(tmp_path / "vgg16.pth", str(heads), tmp_path / "lpips.safetensors")
    ours = LPIPS.from_file(tmp_path / "lpips.safetensors")

    reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)  # loads vgg.pth heads
    # the package splits features[0..29] into slice1..slice5, ending at the tapped ReLUs, keeping indices
    vgg, starts = random_vgg_state(), (0,) + tuple(t + 1 for t in TAPS[:-1])
    trunk = {f"slice{s + 1}.{i}.{p}": vgg[f"features.{i}.{p}"]
             for s, (lo, hi) in enumerate(zip(starts, TAPS)) for i in range(lo, hi + 1)
             for p in ("weight", "bias") if f"features.{i}.{p}" in vgg}
    reference.net.load_state_dict(trunk)
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(2, 3, 32, 24, generator=g) * 2 - 1, torch.rand(2, 3, 32, 24, generator=g) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), reference(x, y).flatten(), rtol=1e-5, atol=1e-7)


def test_lpips_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no LPIPS weights file"):
        LPIPS.from_file(tmp_path / "absent.safetensors")
    save_file(random_heads(), str(tmp_path / "heads_only.safetensors"))
    with pytest.raises(KeyError, match="missing keys .*features.0.weight"):
        LPIPS.from_file(tmp_path / "heads_only.safetensors")
