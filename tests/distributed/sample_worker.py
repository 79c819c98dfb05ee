"""One rank of the sequence-parallel sampling check (run by test_sampling_sp.py under torchrun).

    python -m torch.distributed.run --nproc_per_node=K sample_worker.py PIPELINE OUT_DIR [IMAGE]

Each rank samples the same prompt twice from one seed: with the plain DiT (the single-process
reference, computed in this process) and with the DiT's tokens split over the K ranks. Rank 0
writes the largest relative latent difference and whether the ranks' split-token latents are
bitwise equal to OUT_DIR/results.json; then ``run_sample`` (launch/sample.py's path, with
sequence_parallel=K) writes OUT_DIR/video.npy from rank 0 alone.

With IMAGE (a TI2V pipeline): every sample is conditioned on it as its first frame, and
``run_sample`` chains ``TI2V_WINDOWS`` (image=IMAGE windows=2 context_frames=4).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from allegro_train.parallel.distributed import init_distributed
from allegro_train.parallel.groups import build_sequence_groups
from allegro_train.parallel.ulysses import apply_sequence_parallel
from allegro_train.sampling import Condition, Sampler
from allegro_train.sampling.conditioning import read_image
from allegro_train.sampling.command import run_sample
from allegro_train.sampling.config import load_sample_config

# 8 x 48 x 80 pixels: a 2 x 6 x 10 latent grid, 30 tokens, split 15 + 15 (SP 2) or 8 x 3 + 6 (SP 4)
SAMPLE = dict(negative_prompt="a dark square", num_frames=8, height=48, width=80, steps=3, guidance=4.0, seed=3,
              clean_caption=False)
PROMPT = "a red cat runs across the field."
TI2V_WINDOWS = ("windows=2", "context_frames=4")  # 8 + 4 frames: the second window repeats 4


def main() -> None:
    pipeline, out = sys.argv[1], Path(sys.argv[2])
    image = sys.argv[3] if len(sys.argv) > 3 else None
    condition = {} if image is None else {"condition": Condition.from_images(read_image(image))}
    info = init_distributed()
    sp = build_sequence_groups(info.world_size, info)
    reference = Sampler.from_pretrained(pipeline).sample_latents([PROMPT], **SAMPLE, **condition)
    split = Sampler.from_pretrained(pipeline)
    apply_sequence_parallel(split.transformer, sp.group)
    latents = split.sample_latents([PROMPT], **SAMPLE, **condition)
    ranks = [torch.empty_like(latents) for _ in range(info.world_size)]
    dist.all_gather(ranks, latents)
    results = torch.tensor([float((latents - reference).abs().max() / reference.abs().max()),
                            float(not all(torch.equal(r, ranks[0]) for r in ranks))], dtype=torch.float64)
    dist.all_reduce(results, op=dist.ReduceOp.MAX)
    if info.is_main:
        (out / "results.json").write_text(json.dumps({"latents_rel": results[0].item(),
                                                      "ranks_differ": bool(results[1].item())}))
    cfg = load_sample_config([f"checkpoint={pipeline}", f"prompt={PROMPT}", f"out={out / 'video.npy'}", "device=cpu",
                              "dtype=fp32", f"sequence_parallel={info.world_size}",
                              *(() if image is None else (f"image={image}", *TI2V_WINDOWS)),
                              *(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in SAMPLE.items())])
    run_sample(cfg)  # tears the process group down at its end


if __name__ == "__main__":
    main()
