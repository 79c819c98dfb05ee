"""Sampling speed: seconds per denoising step, our Sampler vs diffusers' AllegroPipeline, same weights.

CPU mode (default) builds a small random pipeline (a 4-block DiT, the debug VAE, a tiny T5),
exports it, and times both at one size with CFG. Each side runs 1 step and ``--steps`` steps
(text encoding included in both); s/step = (t_steps - t_1) / (steps - 1), so model loading, text
encoding and the VAE decode (fixed costs) drop out. Runs alternate, best of ``--repeats``.

    python benchmarks/sample_speed.py                              # CPU, 16x128x128, 6 steps
    python benchmarks/sample_speed.py --checkpoint /weights/Allegro --device cuda --dtype bf16 \
        --clip 88 720 1280 --steps 100 --full                      # one released-size sample, timed

``--full`` times one complete ``Sampler.sample`` (text, 100 steps, tiled VAE decode) instead, ours
only: the released README quotes about 20 minutes for it on one H100. Prints a markdown table.

``--random-weights`` needs neither weights nor diffusers (the GPU benchmark machines have
neither): the released DiT and VAE with random weights, ``--steps`` timed CFG steps after one
warm-up, extrapolated to ``--total-steps``, then one tiled decode; one JSON line (see
``time_random_weights``):

    python benchmarks/sample_speed.py --random-weights --device cuda --clip 88 720 1280 --steps 3 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from allegro_train.models.dit import AllegroDiT, dit_config  # noqa: E402
from allegro_train.models.vae import VideoVAE, vae_config  # noqa: E402

if TYPE_CHECKING:  # the sampling package needs diffusers and hydra, which --random-weights does without
    from allegro_train.sampling import Sampler

PROMPT = "a red cat runs across the field."
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a pipeline folder (default: build a small random one on CPU)")
    p.add_argument("--clip", type=int, nargs=3, default=(16, 128, 128), metavar=("T", "H", "W"), help="pixels")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--full", action="store_true", help="time one whole sample, ours only")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--fused-qkv", action="store_true", help="one q/k/v Linear per self-attention")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT's blocks")
    p.add_argument("--random-weights", action="store_true", help="released sizes, random weights, no diffusers")
    p.add_argument("--dit-size", default="allegro-2.8b", help="--random-weights: DiT registry name")
    p.add_argument("--vae-size", default="allegro-vae", help="--random-weights: VAE registry name")
    p.add_argument("--text-len", type=int, default=128, help="--random-weights: T5 tokens (CFG pair padded to one length)")
    p.add_argument("--total-steps", type=int, default=100, help="--random-weights: steps to extrapolate to")
    return p.parse_args(argv)


def build_small_pipeline(root: Path) -> Path:
    """A random pipeline: 4 DiT blocks of 4 x 48 heads, the debug VAE, the tests' tiny T5."""
    from allegro_train.sampling import export_pipeline

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import build_tiny_t5  # the tiny T5 + offline tokenizer the tests use

    build_tiny_t5(root / "t5")
    torch.manual_seed(0)
    dit = AllegroDiT(dit_config("allegro-debug", num_layers=4, num_attention_heads=4, attention_head_dim=48,
                                cross_attention_dim=192))
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.02 * torch.randn_like(p))  # adaLN-Zero would make every step trivial
    dit.save_pretrained(root / "run" / "final" / "transformer")
    VideoVAE(vae_config("allegro-vae-debug")).save_pretrained(root / "vae")
    return export_pipeline(root / "run" / "final" / "transformer", root / "pipeline", vae=root / "vae",
                           text_encoder=root / "t5")


def time_ours(sampler: Sampler, clip, steps: int) -> float:
    """Seconds for text encoding + ``steps`` denoising steps (no decode)."""
    from allegro_train.sampling.sampler import latent_grid

    grid = latent_grid(*clip, sampler.vae.config.compression, sampler.transformer.config.patch_size)
    start = time.perf_counter()
    states, mask = sampler.encode_prompts([PROMPT], "", 7.5, clean_caption=False)
    sampler.denoise(states, mask, grid, steps, 7.5, torch.Generator("cpu").manual_seed(0))
    _sync(sampler.device)
    return time.perf_counter() - start


def time_diffusers(pipe, clip, steps: int, device: str) -> float:
    start = time.perf_counter()
    pipe(PROMPT, num_frames=clip[0], height=clip[1], width=clip[2], num_inference_steps=steps, guidance_scale=7.5,
         generator=torch.Generator("cpu").manual_seed(0), output_type="latent", clean_caption=False)
    _sync(torch.device(device))
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def speed_options(dit: AllegroDiT, args) -> None:
    if args.fused_qkv:
        dit.fuse_qkv()
    if args.compile:
        dit.compile_blocks()


@torch.inference_mode()
def time_random_weights(args) -> dict:
    """Seconds of the denoising loop and of the decode at a clip size, with random weights.

    Each step is what ``Sampler.denoise`` runs: the DiT on the CFG pair (batch 2, ``--dtype``) and
    the guidance combination; the scheduler's elementwise update is a stand-in of the same cost.
    Text encoding (one T5 pass over the prompt pair) is left out. s/step is the median of ``--steps``
    steps after one warm-up step (which compiles, with ``--compile``).
    """
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    with torch.device(device):
        dit = AllegroDiT(dit_config(args.dit_size)).to(dtype).eval()
        vae = VideoVAE(vae_config(args.vae_size)).eval()
    speed_options(dit, args)
    vae.enable_tiling()
    t, s = vae.config.compression[0], vae.config.compression[1]
    grid = (args.clip[0] // t, args.clip[1] // s, args.clip[2] // s)
    latents = torch.randn(1, dit.config.in_channels, *grid, device=device)
    text = torch.randn(2, args.text_len, dit.config.caption_channels, device=device, dtype=dtype)
    mask = torch.ones(2, args.text_len, dtype=torch.bool, device=device)
    mask[0, 8:] = False  # the negative prompt "" is a few tokens; the prompt fills the length

    def step(i: int) -> float:
        start = time.perf_counter()
        timestep = torch.full((2,), 999 - 10 * i, device=device)
        uncond, cond = dit(torch.cat([latents, latents]).to(dtype), timestep, text, mask).float().chunk(2)
        latents.sub_(0.01 * (uncond + 7.5 * (cond - uncond)))  # stand-in for scheduler.step
        _sync(device)
        return time.perf_counter() - start

    warmup = step(0)
    seconds = statistics.median(step(i + 1) for i in range(args.steps))
    start = time.perf_counter()
    video = vae.decode(latents / vae.scaling_factor)  # [1, 3, T, H, W] fp32
    frames = (video / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)  # the sampler's uint8 rounding
    _sync(device)
    decode = time.perf_counter() - start
    return {"clip": list(args.clip), "latents": list(grid), "dit": args.dit_size, "vae": args.vae_size,
            "dtype": args.dtype, "device": _device_name(args.device), "compile": args.compile,
            "fused_qkv": args.fused_qkv, "text_len": args.text_len, "warmup_step_s": warmup,
            "s_per_step": seconds, "timed_steps": args.steps, "decode_s": decode, "frames": list(frames.shape),
            "total_steps": args.total_steps, "extrapolated_total_s": args.total_steps * seconds + decode}


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"


def per_step(run, steps: int, repeats: int) -> float:
    one = min(run(1) for _ in range(repeats))
    many = min(run(steps) for _ in range(repeats))
    return (many - one) / (steps - 1)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_weights:
        print(json.dumps(time_random_weights(args)))
        return
    from allegro_train.sampling import Sampler

    dtype = DTYPES[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else build_small_pipeline(Path(tmp))
        sampler = Sampler.from_pretrained(checkpoint, device=args.device, dtype=dtype, vae_tiling=True)
        speed_options(sampler.transformer, args)  # ours only: diffusers' pipeline runs its own model
        clip = tuple(args.clip)
        device = _device_name(args.device)
        size = f"{clip[0]}x{clip[1]}x{clip[2]}"
        if args.full:
            start = time.perf_counter()
            sampler.sample([PROMPT], num_frames=clip[0], height=clip[1], width=clip[2], steps=args.steps)
            _sync(sampler.device)
            print(f"| ours, whole sample | {size} | {args.steps} steps | {args.dtype} | {device} | "
                  f"{time.perf_counter() - start:.0f} s |")
            return
        import diffusers

        pipe = diffusers.AllegroPipeline.from_pretrained(checkpoint, torch_dtype=dtype).to(args.device)
        ours = per_step(lambda n: time_ours(sampler, clip, n), args.steps, args.repeats)
        theirs = per_step(lambda n: time_diffusers(pipe, clip, n, args.device), args.steps, args.repeats)
        print("| clip | steps | dtype | device | threads | ours s/step | diffusers s/step | diffusers / ours |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {size} | {args.steps} | {args.dtype} | {device} | {torch.get_num_threads()} | {ours:.3f} | "
              f"{theirs:.3f} | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
