"""The TI2V DiT: T2V -> TI2V conversion is exact, released parameter names and config format, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allegro_train.models.dit import (AllegroDiT, AllegroTI2VDiT, DiTConfig, convert_t2v_to_ti2v, dit_config,
                                      ti2v_from_t2v, transformer_class)
from allegro_train.models.dit.ti2v import config_from_released

REPO = Path(__file__).resolve().parents[2]
# Released RoPE scales, so the interpolation path is exercised too.
CONFIG = dit_config("allegro-debug", interpolation_scale_t=2.2, interpolation_scale_h=2.0, interpolation_scale_w=2.0)
# The 9 tensors the released TI2V checkpoint has beyond the T2V one.
EXTRA_KEYS = {f"{name}.{suffix}" for name in ("pos_embed_masked_video", "pos_embed_mask", "pos_embed_first_frame")
              for suffix in ("0.proj.weight", "0.proj.bias", "1.weight")}


def perturbed_t2v(seed: int = 0) -> AllegroDiT:
    """Random weights everywhere, so no zero-initialised branch hides a difference."""
    torch.manual_seed(seed)
    model = AllegroDiT(CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(batch=2, grid=(3, 8, 12), text_len=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    noisy = torch.randn(batch, 4, *grid, generator=g)
    condition = torch.randn(batch, 8, *grid, generator=g)  # masked-clip latents + mask
    text = torch.randn(batch, text_len, CONFIG.caption_channels, generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    mask[0, 3:] = 0
    return noisy, condition, torch.tensor([17, 903][:batch]), text, mask


def test_converted_t2v_computes_exactly_what_t2v_did_and_the_condition_learns():
    t2v = perturbed_t2v()
    ti2v = ti2v_from_t2v(t2v).eval()
    noisy, condition, t, text, mask = inputs()
    with torch.no_grad():
        expected = t2v(noisy, t, text, mask)
        got = ti2v(torch.cat([noisy, condition], dim=1), t, text, mask)
    assert torch.equal(got, expected)  # bitwise: the zero Linears add exact zeros

    # The zero Linears still get gradients, so training opens the condition at once.
    ti2v.train()
    ti2v(torch.cat([noisy, condition], dim=1), t, text, mask).square().mean().backward()
    for name in ("pos_embed_masked_video", "pos_embed_mask", "pos_embed_first_frame"):
        assert getattr(ti2v, name)[1].weight.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="3 x 4"):
        ti2v(noisy, t, text, mask)


def test_state_dict_is_the_released_layout_and_round_trips(tmp_path):
    ti2v = ti2v_from_t2v(perturbed_t2v())
    with torch.no_grad():  # non-zero condition weights, so the round trip is not trivially zeros
        for p in ti2v.parameters():
            p.add_(0.01)
    assert set(ti2v.state_dict()) - set(perturbed_t2v().state_dict()) == EXTRA_KEYS
    ti2v.save_pretrained(tmp_path / "transformer")
    config = json.loads((tmp_path / "transformer" / "config.json").read_text())
    # the released class's config format (AllegroTransformerTI2V3DModel's constructor arguments)
    assert config["_class_name"] == "AllegroTransformerTI2V3DModel"
    assert config["sample_size"] == [16, 16] and config["sample_size_t"] == 4
    assert config["norm_type"] == "ada_norm_single" and config["use_rope"] is True
    assert transformer_class(tmp_path) is AllegroTI2VDiT  # a pipeline-style parent folder works too

    loaded = AllegroTI2VDiT.from_pretrained(tmp_path / "transformer")
    assert loaded.config == ti2v.config
    for key, value in ti2v.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    noisy, condition, t, text, mask = inputs()
    x = torch.cat([noisy, condition], dim=1)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x, t, text, mask), ti2v.eval()(x, t, text, mask))


def test_released_size_parameter_count_on_meta():
    with torch.device("meta"):
        model = AllegroTI2VDiT(DiTConfig())
    # the released Allegro-TI2V transformer: the T2V 2,771,907,856 + 3 patch embeddings + 3 Linears
    assert sum(p.numel() for p in model.parameters()) == 2_787_950_608


def test_released_config_values_are_checked():
    good = json.loads(json.dumps({"_class_name": "AllegroTransformerTI2V3DModel", "sample_size": [90, 160],
                                  "sample_size_t": 22, "interpolation_scale_t": None, "out_channels": None}))
    config = config_from_released(good)
    # unset scales are derived as the released class does (sample_size_t / 16, 90 / 30, 160 / 40)
    assert (config.interpolation_scale_t, config.interpolation_scale_h, config.interpolation_scale_w) == (1.375, 3.0, 4.0)
    assert config.out_channels == 4 and config.sample_height == 90
    with pytest.raises(ValueError, match="norm_type='layer_norm'"):
        config_from_released({**good, "norm_type": "layer_norm"})
    with pytest.raises(ValueError, match="unknown Allegro TI2V transformer config keys \\['made_up'\\]"):
        config_from_released({**good, "made_up": 1})
    with pytest.raises(ValueError, match="_class_name is 'AllegroTransformer3DModel'"):
        config_from_released({**good, "_class_name": "AllegroTransformer3DModel"})


def test_init_weights_keeps_the_condition_closed():
    torch.manual_seed(0)
    model = AllegroTI2VDiT(CONFIG)
    model.init_weights()
    assert model.pos_embed_mask[1].weight.abs().sum() == 0
    assert model.pos_embed_mask[0].proj.weight.abs().sum() > 0  # the patch embedding itself is initialised


def test_convert_cli_keeps_dtype_and_output(tmp_path):
    t2v = perturbed_t2v().to(torch.bfloat16)
    t2v.save_pretrained(tmp_path / "t2v")
    done = subprocess.run([sys.executable, str(REPO / "launch" / "convert_ti2v.py"), str(tmp_path / "t2v"),
                           str(tmp_path / "ti2v")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ti2v = AllegroTI2VDiT.from_pretrained(tmp_path / "ti2v")
    assert ti2v.pos_embed_mask[1].weight.dtype == torch.bfloat16
    noisy, condition, t, text, mask = inputs()
    with torch.no_grad():
        expected = t2v(noisy.bfloat16(), t, text.bfloat16(), mask)
        got = ti2v(torch.cat([noisy, condition], dim=1).bfloat16(), t, text.bfloat16(), mask)
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="_class_name is 'AllegroTransformerTI2V3DModel'"):
        convert_t2v_to_ti2v(tmp_path / "ti2v", tmp_path / "again")  # already TI2V


def test_fused_qkv_ti2v_equals_unfused_and_keeps_the_released_layout(tmp_path):
    """model.fused_qkv on the TI2V variant: the unfused outputs, gradients through the fused Linear and
    the condition, the released keys in its state dict; a fused T2V model converts to a fused TI2V one
    with its checkpointing policy."""
    plain = ti2v_from_t2v(perturbed_t2v())
    with torch.no_grad():  # open the condition, so the extra inputs count in the comparison
        for name in ("pos_embed_masked_video", "pos_embed_mask", "pos_embed_first_frame"):
            getattr(plain, name)[1].weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(7))
    t2v = perturbed_t2v()
    t2v.fuse_qkv()
    t2v.set_activation_checkpointing("selective")
    fused = ti2v_from_t2v(t2v)
    assert fused.transformer_blocks[0].attn1.fused and fused.checkpointing == t2v.checkpointing
    fused.load_state_dict(plain.state_dict())  # diffusers' to_q/to_k/to_v keys join into to_qkv
    assert list(fused.state_dict()) == list(plain.state_dict())

    noisy, condition, t, text, mask = inputs()
    x = torch.cat([noisy, condition], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(fused(x, t, text, mask), plain(x, t, text, mask), atol=1e-6, rtol=1e-6)
    fused(x, t, text, mask).square().mean().backward()  # through selective checkpointing of the TI2V forward
    assert fused.transformer_blocks[0].attn1.to_qkv.weight.grad.abs().sum() > 0
    assert fused.pos_embed_mask[1].weight.grad.abs().sum() > 0

    fused.save_pretrained(tmp_path / "transformer")
    loaded = AllegroTI2VDiT.from_pretrained(tmp_path / "transformer")
    for key, value in plain.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
