"""DiT training-step benchmark: forward + backward (+ optimizer) time, throughput, MFU, peak memory.

One implementation per process (so peak memory is its own), e.g.

    # GPU: the released size at 88x720x1280 (22x90x160 latents, 512 text tokens), bf16
    python benchmarks/dit_step.py --size allegro-2.8b --device cuda --dtype bf16 --checkpointing all
    # CPU: ours vs diffusers side by side at a small config, alternating runs, as a ratio
    python benchmarks/dit_step.py --compare-diffusers --repeats 3
    # selective checkpointing, fused q/k/v, cuDNN attention, compiled: the candidates of issue 12
    python benchmarks/dit_step.py --size allegro-2.8b --device cuda --dtype bf16 --checkpointing selective \
        --fused-qkv --sdpa-kernel cudnn --compile
    # Ulysses SP: one rank's share of a K-way group on one GPU (memory and compute, no all-to-all) ...
    python benchmarks/dit_step.py --size allegro-2.8b --device cuda --dtype bf16 --checkpointing none --emulate-sp 8
    # ... or the real thing on K GPUs (NCCL; gloo on CPUs)
    torchrun --nproc_per_node=8 benchmarks/dit_step.py --size allegro-2.8b --device cuda --dtype bf16 \
        --checkpointing none --sequence-parallel 8

Needs torch, einops and this package's models only (diffusers just for --impl diffusers).
Results go to docs/benchmarks.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from allegro_train.models.dit import AllegroDiT, dit_config, dit_train_flops  # noqa: E402
from allegro_train.parallel.memory import GIB, SavedActivations, activation_bytes  # noqa: E402
from sp_emulation import emulate_sequence_parallel  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, for MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
# The small config of the CPU comparison: 4 blocks, 4 heads x 48, 8x32x32 latents (2048 tokens).
SMALL = dict(num_attention_heads=4, attention_head_dim=48, num_layers=4, cross_attention_dim=192, caption_channels=64)
SDPA_KERNELS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", help="registry name (allegro-2.8b, allegro-debug) or 'small'")
    p.add_argument("--grid", type=int, nargs=3, default=None, metavar=("T", "H", "W"), help="latent grid")
    p.add_argument("--text-len", type=int, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--impl", default="ours", choices=["ours", "diffusers"])
    p.add_argument("--backend", default="sdpa", help="sdpa, flash (flash-attn), auto")
    p.add_argument("--sdpa-kernel", default=None, choices=sorted(SDPA_KERNELS),
                   help="SDPA's kernel first; the masked cross-attention falls back to 'efficient' where the "
                        "kernel takes no mask (flash)")
    p.add_argument("--checkpointing", default="none", help="none, all, every_<k>, selective")
    p.add_argument("--compile", action="store_true", help="torch.compile each block")
    p.add_argument("--fused-qkv", action="store_true", help="one q/k/v Linear per self-attention")
    p.add_argument("--layers", type=int, default=None, help="blocks (default: the size's); per-block comparisons")
    p.add_argument("--optimizer", action="store_true", help="include an AdamW step")
    p.add_argument("--sequence-parallel", type=int, default=1, help="Ulysses degree; run under torchrun")
    p.add_argument("--emulate-sp", type=int, default=1, help="one rank's share of a K-way SP group, one device")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compare-diffusers", action="store_true", help="run ours and diffusers in subprocesses")
    p.add_argument("--repeats", type=int, default=3, help="alternating subprocess runs per impl (compare mode)")
    p.add_argument("--json", action="store_true", help="print one JSON line (used by compare mode)")
    args = p.parse_args(argv)
    if args.grid is None:
        args.grid = [22, 90, 160] if args.size == "allegro-2.8b" else [8, 32, 32]
    if args.text_len is None:
        args.text_len = 512 if args.size == "allegro-2.8b" else 64
    return args


def build_config(args):
    overrides = {} if args.layers is None else {"num_layers": args.layers}
    if args.size == "small":
        return dit_config("allegro-debug", **{**SMALL, **overrides})
    return dit_config(args.size, **overrides)


def build_model(args, config, device, dtype):
    """Both implementations get the same weights: ours built from the seed, copied into diffusers."""
    torch.manual_seed(0)
    with torch.device(device if args.impl == "ours" else "cpu"):  # a 2.8B init on the GPU takes seconds
        ours = AllegroDiT(config, attention_backend=args.backend)
    if args.impl == "ours":
        if args.fused_qkv:
            ours.fuse_qkv()
        ours.set_activation_checkpointing(args.checkpointing)
        if args.compile:
            ours.compile_blocks()
        return ours.to(device, dtype)
    from diffusers import AllegroTransformer3DModel

    model = AllegroTransformer3DModel(**dataclasses.asdict(config))
    model.load_state_dict(ours.state_dict())
    if args.checkpointing != "none":
        model.enable_gradient_checkpointing()
    return model.to(device, dtype)


def make_step(args, model, config, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    latents = torch.randn(args.batch, config.in_channels, *args.grid, generator=g).to(device, dtype)
    text = torch.randn(args.batch, args.text_len, config.caption_channels, generator=g).to(device, dtype)
    mask = torch.ones(args.batch, args.text_len, device=device)
    mask[:, args.text_len // 2 :] = 0  # half padding, as short prompts have
    timestep = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if args.optimizer else None

    if args.impl == "ours":
        forward = lambda: model(latents, timestep, text, mask)  # noqa: E731
    else:
        from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

        def forward():
            # the rotary tables are rebuilt every step, as our model does inside its forward
            t, gh, gw = args.grid[0], args.grid[1] // config.patch_size, args.grid[2] // config.patch_size
            *freqs, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
                config.attention_head_dim, ((0, 0), (gh, gw)), (gh, gw), t,
                (config.interpolation_scale_t, config.interpolation_scale_h, config.interpolation_scale_w),
                device=device)
            pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long()).T.reshape(3, 1, -1)
            return model(latents, text, timestep, encoder_attention_mask=mask,
                         image_rotary_emb=(tuple(freqs), tuple(pos))).sample

    def step(after_forward=lambda: None):
        loss = forward().float().square().mean()
        after_forward()
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def apply_sp(args, model) -> int:
    """The SP degree this process runs a share of: real groups under torchrun, or the emulation."""
    if args.sequence_parallel > 1 and args.emulate_sp > 1:
        raise SystemExit("--sequence-parallel and --emulate-sp exclude each other")
    if args.sequence_parallel > 1:
        from allegro_train.parallel.distributed import init_distributed
        from allegro_train.parallel.groups import build_sequence_groups
        from allegro_train.parallel.ulysses import apply_sequence_parallel

        apply_sequence_parallel(model, build_sequence_groups(args.sequence_parallel, init_distributed()).group)
    elif args.emulate_sp > 1:
        emulate_sequence_parallel(model, args.emulate_sp)
    return max(args.sequence_parallel, args.emulate_sp)


def run_one(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.sequence_parallel > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    config = build_config(args)
    model = build_model(args, config, device, dtype)
    sp = apply_sp(args, model)
    step = make_step(args, model, config, device, dtype)

    with sdpa_kernels(args.sdpa_kernel):
        # CPU peak memory comes from the first step: afterwards the allocator keeps freed
        # activations resident, so the process's RSS no longer shows what a step needs.
        rss_before = rss_bytes()
        with SavedActivations(model) as saved:
            step(after_forward=saved.count_checkpoint_caches)  # "selective" keeps its tensors in torch's cache
        for _ in range(args.warmup - 1):
            step()
        sync(device)
        cpu_peak_step = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
        if device.type == "cuda":
            resident = torch.cuda.memory_allocated(device)  # weights (+ optimizer states), no gradients
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - start)

    seconds = statistics.median(times)
    tokens = args.batch * args.grid[0] * (args.grid[1] // config.patch_size) * (args.grid[2] // config.patch_size)
    flops = dit_train_flops(config, tuple(args.grid), args.text_len, args.batch)
    act = 4 if args.dtype == "fp32" else 2
    predicted = activation_bytes(config, tokens // args.batch, args.text_len, args.batch, args.checkpointing, act, sp)
    result = {
        "impl": args.impl, "size": args.size, "grid": args.grid, "text_len": args.text_len, "batch": args.batch,
        "sequence_parallel": sp, "emulated": args.emulate_sp > 1,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": args.dtype, "backend": args.backend, "sdpa_kernel": args.sdpa_kernel, "compile": args.compile,
        "checkpointing": args.checkpointing, "fused_qkv": args.fused_qkv, "layers": config.num_layers,
        "optimizer": args.optimizer,
        # per SP group (tokens) and per device (TFLOP/s: the group's FLOPs over its K devices)
        "s_per_step": seconds, "tokens_per_s": tokens / seconds, "tflops": flops / sp / seconds / 1e12,
        "saved_activations_mib": saved.bytes / 2**20,
        "predicted_activations_gib": predicted / GIB,  # parallel/memory.py: saved + one recomputed block
    }
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        # activations, gradients and transients of a step, to read against the prediction
        result["step_peak_above_resident_gib"] = (torch.cuda.max_memory_allocated(device) - resident) / 2**30
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in result["device"]), None)
        result["mfu"] = result["tflops"] / peak if peak else None
    else:
        # ru_maxrss is the lifetime peak; above the resident model and inputs, it is the step's
        result["peak_step_mem_gib"] = cpu_peak_step / 2**30
    return result


def sdpa_kernels(name: str | None):
    """Pin SDPA to ``name``'s kernel; "efficient" next, for the masked cross-attention flash cannot run."""
    if name is None:
        return contextlib.nullcontext()
    backend = torch.nn.attention.SDPBackend
    chosen = [getattr(backend, SDPA_KERNELS[name])]
    if name != "efficient":
        chosen.append(backend.EFFICIENT_ATTENTION)
    return torch.nn.attention.sdpa_kernel(chosen, set_priority=True)


def compare(args) -> None:
    """ABAB... subprocess runs of ours and diffusers; medians and the ours/diffusers ratios."""
    base = [sys.executable, __file__, "--json", "--size", args.size, "--grid", *map(str, args.grid),
            "--text-len", str(args.text_len), "--batch", str(args.batch), "--device", args.device,
            "--dtype", args.dtype, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--checkpointing", args.checkpointing]
    if args.threads:
        base += ["--threads", str(args.threads)]
    results: dict[str, list[dict]] = {"ours": [], "diffusers": []}
    for _ in range(args.repeats):
        for impl in results:
            out = subprocess.run(base + ["--impl", impl], check=True, capture_output=True, text=True).stdout
            results[impl].append(json.loads(out.strip().splitlines()[-1]))
    keys = ("s_per_step", "saved_activations_mib", "peak_step_mem_gib")
    med = {impl: {k: statistics.median(r[k] for r in runs) for k in keys} for impl, runs in results.items()}
    print(f"| impl | s/step (median of {args.repeats} runs) | activations saved for backward (MiB) "
          "| peak RSS above the model, first step (GiB) |")
    print("|---|---|---|---|")
    for impl, m in med.items():
        print(f"| {impl} | {m['s_per_step']:.4f} | {m['saved_activations_mib']:.1f} | {m['peak_step_mem_gib']:.3f} |")
    ratios = {k: med["ours"][k] / med["diffusers"][k] for k in keys}
    print(f"\nours / diffusers: time {ratios['s_per_step']:.3f}x, saved activations "
          f"{ratios['saved_activations_mib']:.3f}x, peak RSS {ratios['peak_step_mem_gib']:.3f}x")
    print(json.dumps({"ratios": ratios, "runs": results}))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.compare_diffusers:
        compare(args)
        return
    result = run_one(args)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports (SP ranks do equal work)
        return
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value:.4g}" if isinstance(value, float) else f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
