"""One rank of the sequence-parallel equality checks (run by test_sequence_parallel.py under torchrun).

    python -m torch.distributed.run --nproc_per_node=W sp_worker.py OUT.json SP_DEGREE

Every rank builds the same DiT; a copy gets ``apply_sequence_parallel``. Rank-local references
come from the plain model in the same process, so nothing but the parallel code differs. Rank 0
writes the largest relative differences over all ranks (see ``rel``) per case to OUT.json.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist

from allegro_train.models.dit import AllegroDiT, dit_config
from allegro_train.parallel.distributed import init_distributed, shutdown
from allegro_train.parallel.groups import build_sequence_groups
from allegro_train.parallel.memory import SavedActivations, rope_bytes, saved_activation_bytes
from allegro_train.parallel.ulysses import apply_sequence_parallel, shard_length

# 4 heads (so degrees 2 and 4 divide them), 2 blocks, tiny widths
CONFIG = dit_config("allegro-debug", num_attention_heads=4, attention_head_dim=12, cross_attention_dim=48)
# (T, H, W) latent grids -> N tokens: even, odd (padding), fewer tokens than ranks (a rank of padding only)
GRIDS = {"even_12": (2, 4, 6), "odd_9": (3, 2, 6), "one_token": (1, 2, 2)}


def inputs(grid, seed: int, batch: int = 2, text_len: int = 5):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, CONFIG.in_channels, *grid, generator=g)
    text = torch.randn(batch, text_len, CONFIG.caption_channels, generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    mask[0, 3:] = 0  # padded text
    timestep = torch.randint(0, 1000, (batch,), generator=g)
    weight = torch.randn(batch, CONFIG.out_channels, *grid, generator=g)  # the loss: sum(out * weight)
    return latents, timestep, text, mask, weight


def rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-30) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(floor))


def grads_rel(model_grads: dict, reference: torch.nn.Module) -> float:
    """Largest per-tensor relative difference, each tensor's scale floored at 1 % of the model's largest
    gradient: some gradients are exactly zero in exact arithmetic (key biases: softmax is
    shift-invariant; q and k with a single token), and there both sides are rounding noise."""
    floor = 1e-2 * max(float(p.grad.abs().max()) for p in reference.parameters())
    return max(rel(model_grads[name], p.grad, floor) for name, p in reference.named_parameters())


def model_cases(reference: AllegroDiT, sp_model: AllegroDiT, group) -> dict[str, float]:
    """Outputs and SP-summed parameter gradients vs the plain model, per grid and checkpointing policy."""
    out: dict[str, float] = {}
    for policy in ("none", "all", "selective"):
        for model in (reference, sp_model):
            model.set_activation_checkpointing(policy)
        for name, grid in GRIDS.items():
            latents, timestep, text, mask, weight = inputs(grid, seed=len(out))
            results = []
            for model in (reference, sp_model):
                model.zero_grad(set_to_none=True)
                prediction = model(latents, timestep, text, mask)
                (prediction * weight).sum().backward()
                results.append(prediction.detach())
            for p in sp_model.parameters():  # K x each rank's own tokens' share: the mean is the whole
                dist.all_reduce(p.grad, group=group)
                p.grad /= dist.get_world_size(group)
            grads = dict((n, p.grad) for n, p in sp_model.named_parameters())
            out[f"{name}/{policy}/output"] = rel(results[1], results[0])
            out[f"{name}/{policy}/grads"] = grads_rel(grads, reference)
    return out


def memory_cases(sp_model: AllegroDiT, size: int) -> dict[str, float]:
    """What autograd saves on this rank vs parallel/memory.py's formula (relative difference)."""
    out = {}
    for policy in ("none", "all", "selective"):
        sp_model.set_activation_checkpointing(policy)
        for name, grid in GRIDS.items():
            latents, timestep, text, mask, _ = inputs(grid, seed=0)
            with SavedActivations(sp_model) as saved:
                prediction = sp_model(latents, timestep, text, mask)
                saved.count_checkpoint_caches()
            del prediction
            tokens = grid[0] * (grid[1] // 2) * (grid[2] // 2)
            predicted = saved_activation_bytes(CONFIG, tokens, text.shape[1], len(latents), policy, 4, size)
            if policy != "none":  # RoPE tables reach the checkpoints as plain arguments (see test_memory.py)
                predicted -= rope_bytes(CONFIG, shard_length(tokens, size))
            out[f"{name}/{policy}/saved_bytes"] = abs(saved.bytes - predicted) / predicted
    return out


def engine_cases(reference: AllegroDiT, sp, dp_size: int) -> dict[str, float]:
    """DeepSpeed's plain data-parallel reduction over all ranks: full gradients equal the plain model's
    mean over the DP streams."""
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    grid = GRIDS["odd_9"]
    reference.set_activation_checkpointing("none")
    reference.zero_grad(set_to_none=True)
    for stream in range(dp_size):  # the single-process gradient of all DP streams' mean loss
        latents, timestep, text, mask, weight = inputs(grid, seed=100 + stream)
        ((reference(latents, timestep, text, mask) * weight).sum() / dp_size).backward()
    latents, timestep, text, mask, weight = inputs(grid, seed=100 + sp.dp_rank)  # this SP group's stream
    out = {}
    for stage in (0, 2, 3):
        model = apply_sequence_parallel(copy.deepcopy(reference), sp.group)
        model.zero_grad(set_to_none=True)
        config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                  "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
                  "zero_optimization": {"stage": stage}, "communication_data_type": "fp32",
                  "steps_per_print": 2**62}
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        engine.backward((engine(latents, timestep, text, mask) * weight).sum())
        grads = {name: safe_get_full_grad(p) for name, p in engine.module.named_parameters()}
        out[f"zero{stage}/grads"] = grads_rel(grads, reference)
        engine.destroy()
    return out


def main() -> None:
    path, degree = sys.argv[1], int(sys.argv[2])
    info = init_distributed()
    try:
        sp = build_sequence_groups(degree, info)
        torch.manual_seed(0)
        reference = AllegroDiT(CONFIG)  # PyTorch's default init: every weight non-zero
        sp_model = apply_sequence_parallel(copy.deepcopy(reference), sp.group)
        results = model_cases(reference, sp_model, sp.group)
        results.update(memory_cases(sp_model, sp.size))
        results.update(engine_cases(reference, sp, sp.dp_size))
        worst = torch.tensor(list(results.values()), dtype=torch.float64)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # every SP group's comparison counts
        results = dict(zip(results, worst.tolist()))
        if info.is_main:
            with open(path, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
