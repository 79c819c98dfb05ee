"""Loader throughput: samples/s and frames/s of each decode backend on the same shards, and of the
precomputed path, through ``build_loader`` (read, shuffle, decode, resize + crop, batch).

    python benchmarks/loader.py                      # 24 clips of 48 frames at 480x854 -> 40x368x640
    python benchmarks/loader.py --workers 2 --clips 48

The shards are written first into a temporary folder: H.264 clips of ffmpeg's testsrc pattern
(the tests' writer, tests/data/shardgen.py) and precomputed samples of random moments and T5
states of the shapes the released model trains on. Each case runs ``--repeats`` times, best kept
(other processes share the CPU), timed from the first batch on. "decode only" times the backend alone on the same frames, to
separate decoding from resizing. Results go to docs/data.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data")]
from allegro_train.config.schema import BucketConfig, DataConfig, DecodeBackend  # noqa: E402
from allegro_train.data import build_loader  # noqa: E402
from allegro_train.data.decode import check_backend, decode_video, frame_indices  # noqa: E402
from shardgen import encode_testsrc, latent_sample, video_sample, write_shard  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=24, help="clips (and precomputed samples) in all")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--source", type=int, nargs=3, default=[48, 480, 854], metavar=("F", "H", "W"))
    p.add_argument("--bucket", type=int, nargs=3, default=[40, 368, 640], metavar=("F", "H", "W"))
    p.add_argument("--text-tokens", type=int, default=120, help="T5 states per precomputed caption [L, 4096]")
    p.add_argument("--workers", type=int, default=0, help="data.num_workers")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the main process (workers always use 1); 1 keeps a shared CPU from "
                        "turning OpenMP spin-waits into the measurement")
    return p.parse_args(argv)


def write_shards(root: Path, args: argparse.Namespace) -> tuple[str, str]:
    frames, height, width = args.source
    per = args.clips // args.shards  # every clip is the same (cached) encode, under its own key
    for s in range(args.shards):
        write_shard(root / f"video{s:02d}.tar", [video_sample(f"c{s}_{i}", frames, height, width, fps=24)
                                                 for i in range(per)])
        write_shard(root / f"latent{s:02d}.tar", [latent_sample(f"l{s}_{i}", tuple(args.bucket), args.text_tokens,
                                                                text_width=4096, seed=i) for i in range(per)])
    last = args.shards - 1
    return str(root / f"video{{00..{last:02d}}}.tar"), str(root / f"latent{{00..{last:02d}}}.tar")


def run_loader(shards: str, args: argparse.Namespace, **kw) -> tuple[float, int, int]:
    """Seconds, samples and frames of one epoch after its first batch (steady state: worker start-up
    and the first shard's open are left out)."""
    cfg = DataConfig(shards=[shards], buckets=[BucketConfig(*args.bucket)], batch_size=1,
                     num_workers=args.workers, epochs=1, shuffle_buffer=8, **kw)
    start, samples, frames = None, 0, 0
    for batch in build_loader(cfg, seed=0):
        if start is None:
            start = time.perf_counter()
            continue
        samples += len(batch["keys"])
        frames += len(batch["keys"]) * batch["bucket"][0]
    return time.perf_counter() - start, samples, frames


def decode_only(backend: DecodeBackend, args: argparse.Namespace) -> float:
    frames, height, width = args.source
    clip = encode_testsrc(frames, height, width, 24)
    indices = frame_indices(frames, 24.0, args.bucket[0], 1, None, random.Random(0))
    start = time.perf_counter()
    for _ in range(args.clips):
        decode_video(clip, indices, backend, "bench")
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video, latent = write_shards(Path(tmp), args)
        for backend in DecodeBackend:
            try:
                check_backend(backend)
            except RuntimeError as error:
                rows.append((f"online, {backend.value}", None, None, None, str(error)))
                continue
            best = min(run_loader(video, args, precomputed=False, decode_backend=backend) for _ in range(args.repeats))
            decode = min(decode_only(backend, args) for _ in range(args.repeats))
            rows.append((f"online, {backend.value}", *best, decode))
        best = min(run_loader(latent, args, precomputed=True) for _ in range(args.repeats))
        rows.append(("precomputed (latents + T5 states)", *best, None))
    f, h, w = args.source
    print(f"{args.clips} samples, source {f}x{h}x{w} H.264 -> bucket {'x'.join(map(str, args.bucket))}, "
          f"num_workers={args.workers}, {args.threads} torch thread(s), batch 1; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible\n")
    print("| path | samples/s | frames/s | decode only, frames/s |")
    print("|---|---|---|---|")
    for name, seconds, samples, frames, decode in rows:
        if seconds is None:
            print(f"| {name} | - | - | not installed: {decode} |")
            continue
        decode_rate = "-" if decode is None else f"{args.clips * args.bucket[0] / decode:.0f}"
        print(f"| {name} | {samples / seconds:.1f} | {frames / seconds:.0f} | {decode_rate} |")


if __name__ == "__main__":
    main()
