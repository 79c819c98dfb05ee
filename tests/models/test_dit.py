"""AllegroDiT against diffusers' AllegroTransformer3DModel, the reference implementation."""

from __future__ import annotations

import dataclasses
import gc
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from allegro_train.models.dit import AllegroDiT, DiTConfig, dit_config, dit_forward_flops
from allegro_train.models.dit.attention import split_qkv_keys

diffusers = pytest.importorskip("diffusers")
from diffusers import AllegroTransformer3DModel  # noqa: E402
from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro  # noqa: E402

TINY_CONFIGS = {
    "2heads": DiTConfig(num_attention_heads=2, attention_head_dim=12, num_layers=2, cross_attention_dim=24,
                        caption_channels=16, interpolation_scale_t=1.0, interpolation_scale_h=1.0,
                        interpolation_scale_w=1.0),
    # released interpolation scales, 3 heads, more output than input channels
    "3heads_scaled": DiTConfig(num_attention_heads=3, attention_head_dim=18, num_layers=1, cross_attention_dim=54,
                               caption_channels=20, in_channels=4, out_channels=8),
}
# (T, H, W) latent grids: odd T, non-square, a single frame
GRIDS = [(3, 6, 10), (5, 4, 8), (1, 8, 6)]


def diffusers_rope(config: DiTConfig, grid: tuple[int, int, int]):
    """image_rotary_emb exactly as AllegroPipeline._prepare_rotary_positional_embeddings builds it."""
    frames, gh, gw = grid[0], grid[1] // config.patch_size, grid[2] // config.patch_size
    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=config.attention_head_dim,
        crops_coords=((0, 0), (gh, gw)),
        grid_size=(gh, gw),
        temporal_size=frames,
        interpolation_scale=(config.interpolation_scale_t, config.interpolation_scale_h, config.interpolation_scale_w),
    )
    pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long())
    pos = pos.reshape(-1, 3).transpose(0, 1).reshape(3, 1, -1).contiguous()
    return (freqs_t, freqs_h, freqs_w), tuple(pos)


def diffusers_model(config: DiTConfig, seed: int = 0) -> AllegroTransformer3DModel:
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in config.to_diffusers_dict().items() if not k.startswith("_")}
    model = AllegroTransformer3DModel(**kwargs).eval()
    with torch.no_grad():  # non-trivial biases and tables everywhere
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def ours_from(reference: AllegroTransformer3DModel, config: DiTConfig) -> AllegroDiT:
    model = AllegroDiT(config).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    return model


def make_inputs(config: DiTConfig, grid, batch=2, text_len=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, config.in_channels, *grid, generator=g)
    timestep = torch.tensor([17, 903][:batch])
    text = torch.randn(batch, text_len, config.caption_channels, generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    mask[0, 4:] = 0  # padded caption
    return latents, timestep, text, mask


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: "x".join(map(str, g)))
def test_matches_diffusers_outputs_and_input_gradients(name, grid):
    config = TINY_CONFIGS[name]
    reference = diffusers_model(config)
    ours = ours_from(reference, config)
    latents, timestep, text, mask = make_inputs(config, grid)

    ref_inputs = (latents.clone().requires_grad_(), text.clone().requires_grad_())
    our_inputs = (latents.clone().requires_grad_(), text.clone().requires_grad_())
    ref_out = reference(ref_inputs[0], ref_inputs[1], timestep, encoder_attention_mask=mask,
                        image_rotary_emb=diffusers_rope(config, grid)).sample
    our_out = ours(our_inputs[0], timestep, our_inputs[1], mask)

    assert our_out.shape == (2, config.out_channels, *grid)
    torch.testing.assert_close(our_out, ref_out, atol=1e-5, rtol=0)
    weights = torch.randn_like(ref_out)
    (ref_out * weights).sum().backward()
    (our_out * weights).sum().backward()
    for ref, mine in zip(ref_inputs, our_inputs):
        torch.testing.assert_close(mine.grad, ref.grad, atol=1e-5, rtol=0)
    ref_grads = dict(reference.named_parameters())
    for key, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, ref_grads[key].grad, atol=1e-4, rtol=1e-4, msg=key)


def test_text_padding_is_masked():
    config = TINY_CONFIGS["2heads"]
    model = ours_from(diffusers_model(config), config)
    latents, timestep, text, mask = make_inputs(config, (3, 6, 10))
    changed = text.clone()
    changed[0, 4:] += 10.0  # only the padded positions of sample 0
    with torch.no_grad():
        torch.testing.assert_close(model(latents, timestep, changed, mask), model(latents, timestep, text, mask))
        assert not torch.allclose(model(latents, timestep, changed, None)[0], model(latents, timestep, text, None)[0])


def test_save_pretrained_loads_in_diffusers_exactly(tmp_path):
    config = TINY_CONFIGS["3heads_scaled"]
    ours = AllegroDiT(config)
    ours.save_pretrained(tmp_path)
    loaded = AllegroTransformer3DModel.from_pretrained(tmp_path)
    ref_state = loaded.state_dict()
    assert ref_state.keys() == ours.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(ref_state[key], value), key
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "AllegroTransformer3DModel"


def test_from_pretrained_reads_diffusers_exactly_and_keeps_dtype(tmp_path):
    config = TINY_CONFIGS["2heads"]
    reference = diffusers_model(config).to(torch.bfloat16)
    reference.save_pretrained(tmp_path)
    ours = AllegroDiT.from_pretrained(tmp_path)
    assert ours.config == config
    assert all(p.dtype == torch.bfloat16 for p in ours.parameters())
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    assert AllegroDiT.from_pretrained(tmp_path, torch_dtype=torch.float32).proj_out.weight.dtype == torch.float32


def test_sharded_round_trip_both_ways(tmp_path):
    config = TINY_CONFIGS["2heads"]
    reference = diffusers_model(config)
    reference.save_pretrained(tmp_path / "from_diffusers", max_shard_size="20KB")
    assert (tmp_path / "from_diffusers" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    ours = AllegroDiT.from_pretrained(tmp_path / "from_diffusers")

    ours.save_pretrained(tmp_path / "from_ours", max_shard_size="20KB")
    shards = sorted((tmp_path / "from_ours").glob("diffusion_pytorch_model-*-of-*.safetensors"))
    assert len(shards) > 1
    back = AllegroTransformer3DModel.from_pretrained(tmp_path / "from_ours")
    for key, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key

    # re-saving unsharded into the same folder leaves no stale shards or index behind
    ours.save_pretrained(tmp_path / "from_ours")
    leftovers = sorted(p.name for p in (tmp_path / "from_ours").glob("diffusion_pytorch_model*"))
    assert leftovers == ["diffusion_pytorch_model.safetensors"]
    AllegroTransformer3DModel.from_pretrained(tmp_path / "from_ours")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    config = TINY_CONFIGS["2heads"]
    AllegroDiT(config).save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state.pop("proj_out.bias")
    state["transformer_blocks.0.attn1.norm_q.weight"] = torch.ones(12)
    save_file(state, weights)
    with pytest.raises(KeyError) as err:
        AllegroDiT.from_pretrained(tmp_path)
    assert "proj_out.bias" in str(err.value) and "transformer_blocks.0.attn1.norm_q.weight" in str(err.value)


def test_pickled_weights_are_refused(tmp_path):
    config = TINY_CONFIGS["2heads"]
    AllegroDiT(config).save_pretrained(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({}, tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="never loaded"):
        AllegroDiT.from_pretrained(tmp_path)


def test_unknown_config_key_is_an_error(tmp_path):
    AllegroDiT(TINY_CONFIGS["2heads"]).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["use_rope_v2"] = True
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="use_rope_v2"):
        AllegroDiT.from_pretrained(tmp_path)


def test_released_size_parameter_count_on_meta():
    with torch.device("meta"):
        model = AllegroDiT(dit_config("allegro-2.8b"))
    assert sum(p.numel() for p in model.parameters()) == 2_771_907_856
    assert sum(p.numel() for p in model.transformer_blocks[0].parameters()) == 84_978_432


@pytest.mark.parametrize("policy", ["all", "every_2", "selective"])
def test_activation_checkpointing_changes_neither_loss_nor_gradients(policy):
    config = dataclasses.replace(TINY_CONFIGS["2heads"], num_layers=3)
    torch.manual_seed(0)
    plain = AllegroDiT(config)
    checkpointed = AllegroDiT(config)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_activation_checkpointing(policy)
    latents, timestep, text, mask = make_inputs(config, (3, 6, 10))
    losses = []
    for model in (plain, checkpointed):
        loss = model(latents, timestep, text, mask).square().mean()
        loss.backward()
        losses.append(loss)
    assert torch.equal(losses[0], losses[1])
    for (key, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.equal(a.grad, b.grad), key


def test_init_weights_predicts_zero_and_still_learns():
    model = AllegroDiT(dit_config("allegro-debug"))
    model.init_weights()
    latents, timestep, text, mask = make_inputs(model.config, (2, 4, 4))
    out = model(latents, timestep, text, mask)
    assert torch.count_nonzero(out) == 0
    out.sub(latents).square().mean().backward()
    assert model.proj_out.weight.grad.abs().sum() > 0
    block = model.transformer_blocks[0]
    assert torch.count_nonzero(block.attn2.to_out[0].weight) == 0
    assert block.attn1.to_q.weight.std() > 0


def test_grid_not_divisible_by_patch_is_a_clear_error():
    model = AllegroDiT(dit_config("allegro-debug"))
    latents, timestep, text, mask = make_inputs(model.config, (2, 5, 4))
    with pytest.raises(ValueError, match="divisible by patch"):
        model(latents, timestep, text, mask)


def test_attention_backends():
    model = AllegroDiT(dit_config("allegro-debug"), attention_backend="auto")
    if not torch.cuda.is_available():
        assert model.transformer_blocks[0].attn1.core.backend == "sdpa"
    with pytest.raises(ValueError, match="xformers"):
        model.set_attention_backend("xformers")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="flash-attn"):
            AllegroDiT(dit_config("allegro-debug"), attention_backend="flash")


def test_config_rejects_non_allegro_shapes():
    with pytest.raises(ValueError, match="attention_head_dim"):
        DiTConfig(attention_head_dim=64).validate()
    with pytest.raises(ValueError, match="cross_attention_dim"):
        DiTConfig(cross_attention_dim=1024).validate()


def test_flops_formula_matches_counted_matmuls():
    config = dataclasses.replace(TINY_CONFIGS["3heads_scaled"], num_layers=2)
    model = AllegroDiT(config)
    grid, text_len = (3, 6, 10), 7
    latents, timestep, text, _ = make_inputs(config, grid, batch=2, text_len=text_len)
    counter = FlopCounterMode(display=False)
    # The math kernel decomposes attention into counted bmm's; CPU's fused kernel is not counted.
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(latents, timestep, text, torch.ones(2, text_len))
    assert dit_forward_flops(config, grid, text_len, batch=2) == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_released_flops_at_79200_tokens():
    flops = dit_forward_flops(dit_config("allegro-2.8b"), (22, 90, 160), 512) * 3
    assert flops == pytest.approx(6.7e15, rel=0.01)


def test_models_import_needs_only_torch_einops_safetensors():
    """The GPU benchmark machines have torch but none of hydra, deepspeed, webdataset, diffusers."""
    code = ("import sys, allegro_train.models.dit, allegro_train.models.io; "
            "print(sorted(m for m in ('hydra', 'omegaconf', 'deepspeed', 'webdataset', 'diffusers', 'wandb') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _block_inputs(model: AllegroDiT, grid=(2, 4, 6), text_len=7):
    g = torch.Generator().manual_seed(0)
    dim = model.config.inner_dim
    tokens = grid[0] * grid[1] * grid[2]
    mask = torch.ones(2, text_len, dtype=torch.bool)
    mask[0, 4:] = False
    return (torch.randn(2, tokens, dim, generator=g), torch.randn(2, text_len, dim, generator=g), mask,
            torch.randn(2, 6 * dim, generator=g), model.rotary_embedding(grid, torch.device("cpu")))


def test_block_compiles_without_graph_breaks():
    model = AllegroDiT(dit_config("allegro-debug"))
    explained = torch._dynamo.explain(model.transformer_blocks[0])(*_block_inputs(model))
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.slow
def test_compiled_blocks_match_eager_and_keep_parameter_names():
    torch.manual_seed(0)
    model = AllegroDiT(dit_config("allegro-debug"))
    keys = list(model.state_dict())
    latents, timestep, text, mask = make_inputs(model.config, (3, 4, 6), text_len=7)
    eager = model(latents, timestep, text, mask)
    model.compile_blocks()
    compiled = model(latents, timestep, text, mask)
    # inductor reorders fp32 reductions and fuses elementwise ops: equal to rounding, not bitwise
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)
    assert list(model.state_dict()) == keys


# ------------------------------------------------------------------ fused q/k/v, selective checkpointing


def checkpoint_cache() -> list[torch.Tensor]:
    """Tensors alive in torch's selective-checkpoint caches (see parallel/memory.py SavedActivations)."""
    from torch.utils.checkpoint import _VersionWrapper

    return [o.val for o in gc.get_objects() if type(o) is _VersionWrapper and isinstance(o.val, torch.Tensor)]


def test_fused_qkv_equals_unfused_outputs_and_gradients():
    config = TINY_CONFIGS["3heads_scaled"]
    plain = ours_from(diffusers_model(config), config)
    fused = ours_from(diffusers_model(config), config)
    fused.fuse_qkv()
    latents, timestep, text, mask = make_inputs(config, (3, 6, 10))
    outs = []
    for model in (plain, fused):
        out = model(latents, timestep, text, mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-6, rtol=1e-6)
    attn, fused_attn = plain.transformer_blocks[0].attn1, fused.transformer_blocks[0].attn1
    for kind in ("weight", "bias"):
        unfused_grad = torch.cat([getattr(attn, name).__getattr__(kind).grad for name in ("to_q", "to_k", "to_v")])
        torch.testing.assert_close(getattr(fused_attn.to_qkv, kind).grad, unfused_grad, atol=1e-6, rtol=1e-6)


def test_fused_qkv_state_dict_is_diffusers_both_ways(tmp_path):
    """A fused model saves diffusers' keys (in the unfused model's order), loads them back, and
    round-trips through AllegroTransformer3DModel (state dict and folder) bit for bit."""
    config = TINY_CONFIGS["2heads"]
    reference = diffusers_model(config)
    fused = AllegroDiT(config)
    fused.fuse_qkv()
    fused.load_state_dict(reference.state_dict(), strict=True)
    assert "to_qkv" in dict(fused.transformer_blocks[0].attn1.named_children())
    state = fused.state_dict()
    assert list(state) == list(AllegroDiT(config).state_dict())
    assert state.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(state[key], value), key

    fused.save_pretrained(tmp_path / "fused")
    loaded = AllegroTransformer3DModel.from_pretrained(tmp_path / "fused")
    for key, value in loaded.state_dict().items():
        assert torch.equal(state[key], value), key
    reloaded = AllegroDiT.from_pretrained(tmp_path / "fused")
    reloaded.fuse_qkv()
    for a, b in zip(reloaded.parameters(), fused.parameters()):
        assert torch.equal(a, b)


def test_fused_qkv_init_weights_draws_what_unfused_draws():
    config = TINY_CONFIGS["2heads"]
    torch.manual_seed(3)
    plain = AllegroDiT(config)
    plain.init_weights()
    torch.manual_seed(3)
    fused = AllegroDiT(config)
    fused.fuse_qkv()
    fused.init_weights()
    for (key, a), b in zip(plain.state_dict().items(), fused.state_dict().values()):
        assert torch.equal(a, b), key


def test_cross_attention_does_not_fuse():
    with pytest.raises(ValueError, match="cross-attention"):
        AllegroDiT(TINY_CONFIGS["2heads"]).transformer_blocks[0].attn2.fuse_qkv()


def test_fused_block_compiles_without_graph_breaks():
    model = AllegroDiT(dit_config("allegro-debug"))
    model.fuse_qkv()
    explained = torch._dynamo.explain(model.transformer_blocks[0])(*_block_inputs(model))
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons


def test_selective_checkpointing_keeps_only_attention_kernel_outputs():
    """The policy saves SDPA's kernels (2 per block: self- and cross-attention, out + logsumexp each)
    and nothing else; their outputs are reused, not recomputed, in backward."""
    model = AllegroDiT(TINY_CONFIGS["2heads"])
    model.set_activation_checkpointing("selective")
    latents, timestep, text, mask = make_inputs(model.config, (3, 6, 10))
    out = model(latents, timestep, text, mask)
    kept = checkpoint_cache()
    heads, dim = model.config.num_attention_heads, model.config.inner_dim
    tokens = 3 * 3 * 5
    expected = sorted([(2, heads, tokens, dim // heads), (2, heads, tokens)] * 2 * model.config.num_layers)
    assert sorted(tuple(t.shape) for t in kept) == expected
    out.sum().backward()
    assert not checkpoint_cache()  # consumed by the recomputation


@pytest.mark.slow
def test_compiled_fused_selective_blocks_match_eager():
    """compile + fused q/k/v + selective checkpointing (the GPU benchmark's configuration): gradients
    equal eager, unfused, uncheckpointed ones to rounding, and the attention outputs are still kept
    (the compiled block's SDPA call runs through the checkpoint's caching mode)."""
    torch.manual_seed(0)
    eager = AllegroDiT(dit_config("allegro-debug"))
    fast = AllegroDiT(dit_config("allegro-debug"))
    fast.load_state_dict(eager.state_dict())
    fast.fuse_qkv()
    fast.set_activation_checkpointing("selective")
    fast.compile_blocks()
    latents, timestep, text, mask = make_inputs(eager.config, (3, 4, 6))
    eager(latents, timestep, text, mask).square().mean().backward()
    out = fast(latents, timestep, text, mask)
    assert len(checkpoint_cache()) == 2 * 2 * fast.config.num_layers  # out + logsumexp, 2 attentions a block
    out.square().mean().backward()
    grads = split_qkv_keys({name: p.grad for name, p in fast.named_parameters()})
    for name, p in eager.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)
