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
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from allegro_train.models.dit import AllegroDiT, dit_config  # noqa: E402
from allegro_train.models.vae import VideoVAE, vae_config  # noqa: E402
from allegro_train.sampling import Sampler, export_pipeline  # noqa: E402

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
    return p.parse_args(argv)


def build_small_pipeline(root: Path) -> Path:
    """A random pipeline: 4 DiT blocks of 4 x 48 heads, the debug VAE, the tests' tiny T5."""
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


def per_step(run, steps: int, repeats: int) -> float:
    one = min(run(1) for _ in range(repeats))
    many = min(run(steps) for _ in range(repeats))
    return (many - one) / (steps - 1)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else build_small_pipeline(Path(tmp))
        sampler = Sampler.from_pretrained(checkpoint, device=args.device, dtype=dtype, vae_tiling=True)
        clip = tuple(args.clip)
        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
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
