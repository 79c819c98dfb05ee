"""VideoVAE encode/decode benchmark: ours (tiled) vs diffusers' tiled AutoencoderKLAllegro.

Both run the same weights, the same tile and overlap, at a clip size diffusers' tiler covers
fully (so both do the same work). Each (implementation, operation) runs in its own process, so
the peak memory measured (resident-set growth over the operation, sampled every 2 ms) is its own.

    python benchmarks/vae_codec.py                      # released widths, 8x96x96 on CPU, 2x2 tiles
    python benchmarks/vae_codec.py --size allegro-vae-debug --repeats 3

Prints a markdown table with ratios (diffusers / ours: above 1 means ours is faster / smaller).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from allegro_train.models.vae import VideoVAE, vae_config  # noqa: E402
from allegro_train.models.vae.tiling import TilingConfig, tile_count  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="allegro-vae", help="registry name: allegro-vae, allegro-vae-debug")
    p.add_argument("--clip", type=int, nargs=3, default=(8, 96, 96), metavar=("T", "H", "W"), help="pixels")
    p.add_argument("--tile", type=int, nargs=3, default=(8, 64, 64), metavar=("T", "H", "W"))
    p.add_argument("--overlap", type=int, nargs=3, default=(0, 32, 32), metavar=("T", "H", "W"))
    p.add_argument("--repeats", type=int, default=1, help="alternating runs per implementation and operation")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "OP"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Highest resident-set size while the block runs (CPU tensors are invisible to tracemalloc)."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def worker(args: argparse.Namespace) -> dict:
    impl, op = args.worker
    if args.threads:
        torch.set_num_threads(args.threads)
    config = vae_config(args.size)
    if impl == "diffusers":
        from diffusers import AutoencoderKLAllegro

        kwargs = {k: v for k, v in config.to_diffusers_dict().items() if not k.startswith("_")}
        model = AutoencoderKLAllegro(**kwargs).eval()
        model.enable_tiling()
        model.kernel = tuple(args.tile)
        model.stride = tuple(t - o for t, o in zip(args.tile, args.overlap))
    else:
        model = VideoVAE(config).eval()
        model.enable_tiling(tile=args.tile, overlap=args.overlap)
    # The same weights in both, filled in place in state-dict order (identical keys and shapes):
    # neither process ever holds (and frees) a second model whose memory the codec could reuse.
    # Variance-preserving (N(0, 1/fan_in), norm scales 1, biases 0): activations stay O(1), never
    # denormal, whose slow CPU arithmetic would make the timing depend on the weights.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.ndim > 1:
                tensor.normal_(0.0, (tensor[0].numel()) ** -0.5, generator=g)
            else:  # every 1-D ".weight" of this network is a GroupNorm scale
                tensor.fill_(1.0 if name.endswith(".weight") else 0.0)
    compression = config.compression
    g = torch.Generator().manual_seed(1)
    if op == "encode":
        x = torch.rand(1, 3, *args.clip, generator=g) * 2 - 1
        run = (lambda: model.encode(x).mean) if impl == "ours" else (lambda: model.encode(x).latent_dist.mean)
    else:
        latent = [n // f for n, f in zip(args.clip, compression)]
        x = torch.randn(1, model.config.latent_channels, *latent, generator=g)
        run = (lambda: model.decode(x)) if impl == "ours" else (lambda: model.decode(x).sample)
    with torch.no_grad(), PeakRSS() as mem:
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
    assert torch.isfinite(out).all()
    return {"impl": impl, "op": op, "seconds": seconds, "peak_mib": (mem.peak - mem.start) / 2**20}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    base = [sys.executable, __file__, "--size", args.size, "--clip", *map(str, args.clip),
            "--tile", *map(str, args.tile), "--overlap", *map(str, args.overlap)]
    if args.threads:
        base += ["--threads", str(args.threads)]
    results: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeats):
        for op in ("encode", "decode"):
            for impl in ("ours", "diffusers"):
                line = subprocess.run(base + ["--worker", impl, op], check=True, capture_output=True, text=True)
                record = json.loads(line.stdout.strip().splitlines()[-1])
                results.setdefault((impl, op), []).append(record)
    compression = vae_config(args.size).compression
    grid = tuple(n // f for n, f in zip(args.clip, compression))
    tiles = tile_count(grid, TilingConfig(tuple(args.tile), tuple(args.overlap)), compression)
    print(f"{args.size}, clip {'x'.join(map(str, args.clip))}, tile {'x'.join(map(str, args.tile))}, "
          f"overlap {'x'.join(map(str, args.overlap))} ({tiles} tiles), {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}\n")
    print("| op | ours s | diffusers s | time ratio | ours peak MiB | diffusers peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for op in ("encode", "decode"):
        ours = {k: statistics.median(r[k] for r in results[("ours", op)]) for k in ("seconds", "peak_mib")}
        ref = {k: statistics.median(r[k] for r in results[("diffusers", op)]) for k in ("seconds", "peak_mib")}
        print(f"| {op} | {ours['seconds']:.2f} | {ref['seconds']:.2f} | {ref['seconds'] / ours['seconds']:.2f} | "
              f"{ours['peak_mib']:.0f} | {ref['peak_mib']:.0f} | {ref['peak_mib'] / max(ours['peak_mib'], 1e-9):.2f} |")


if __name__ == "__main__":
    main()
