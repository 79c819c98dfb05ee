"""Propose ZeRO stage, SP degree, offload and checkpointing for a GPU size and a bucket.

    python -m allegro_train.parallel.plan --gpu-mem 80 --frames 88 --height 720 --width 1280 --gpus 8
    python -m allegro_train.parallel.plan --table        # docs/parallelism.md's table

Every candidate layout is costed with ``parallel/memory.py`` (the one memory model) and the
fitting ones are ranked by what slows a step, most costly first:

1. offload (DeepSpeedCPUAdam and PCIe traffic every step): none < optimizer < optimizer + params;
2. recomputation (checkpointing all blocks adds a forward, +33 % compute): the fewest blocks;
3. ZeRO-3 (re-gathers every parameter in forward and backward) after ZeRO 0-2, which move the
   same gradient bytes;
4. the SP degree (four all-to-alls a block; at 79,200 tokens they cost a few % of the attention
   FLOPs on NVLink, far less than recomputation, so SP is preferred to checkpointing);
5. then the fewest bytes.

SP groups stay inside a node (``--gpus-per-node``) and divide the heads and the GPU count.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

import torch

from allegro_train.data.buckets import latent_shape
from allegro_train.models.dit import AllegroDiT, DiTConfig, dit_config
from allegro_train.parallel.memory import GIB, USABLE_FRACTION, Layout, MemoryEstimate, estimate

CHECKPOINTING = {"none": 0.0, "every_8": 1 / 8, "every_4": 1 / 4, "every_2": 1 / 2, "all": 1.0}  # recomputed share
OFFLOAD = [(False, False), (True, False), (True, True)]  # (optimizer, params), cheapest first
# The stages' buckets (configs/stage/*.yaml) for the table: (stage, frames, height, width)
STAGE_BUCKETS = [("t2i_368p", 1, 368, 640), ("t2v_368p_40f", 40, 368, 640),
                 ("t2v_720p_40f", 40, 720, 1280), ("720p / finetune", 88, 720, 1280)]


@dataclass(frozen=True)
class Plan:
    layout: Layout
    memory: MemoryEstimate
    max_batch: int  # samples a step per SP group that still fit

    def rank_key(self) -> tuple:
        lay = self.layout
        return (OFFLOAD.index((lay.offload_optimizer, lay.offload_params)), CHECKPOINTING[lay.checkpointing],
                lay.zero_stage == 3, lay.sequence_parallel, self.memory.gpu)

    def overrides(self) -> str:
        lay = self.layout
        return (f"parallel.zero_stage={lay.zero_stage} parallel.sequence_parallel={lay.sequence_parallel} "
                f"parallel.offload_optimizer={str(lay.offload_optimizer).lower()} "
                f"parallel.offload_params={str(lay.offload_params).lower()} "
                f"model.activation_checkpointing={lay.checkpointing}")


def num_parameters(config: DiTConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in AllegroDiT(config).parameters())


def tokens_of(config: DiTConfig, frames: int, height: int, width: int) -> int:
    t, h, w = latent_shape(frames, height, width)
    return t * (h // config.patch_size) * (w // config.patch_size)


def candidates(config: DiTConfig, gpus: int, gpus_per_node: int, precision: str, ema: bool):
    degrees = [k for k in range(1, config.num_attention_heads + 1)
               if config.num_attention_heads % k == 0 and gpus % k == 0 and k <= gpus_per_node]
    for stage in range(4):
        for offload_optimizer, offload_params in OFFLOAD:
            if (offload_optimizer and stage == 0) or (offload_params and stage != 3):
                continue
            for k in degrees:
                for policy in CHECKPOINTING:
                    yield Layout(gpus, stage, k, offload_optimizer, offload_params, policy, precision, ema)


def plans(gpu_mem_gb: float, frames: int, height: int, width: int, gpus: int, *, gpus_per_node: int = 8,
          batch: int = 1, text_len: int = 512, model: str = "allegro-2.8b", precision: str = "bf16",
          ema: bool = False, host_mem_gb: float | None = None) -> list[Plan]:
    """Every layout that fits ``batch`` samples per SP group, best first (see the module doc)."""
    config = dit_config(model)
    params, tokens = num_parameters(config), tokens_of(config, frames, height, width)
    budget = gpu_mem_gb * GIB * USABLE_FRACTION

    def fits(layout: Layout, b: int) -> MemoryEstimate | None:
        memory = estimate(config, params, tokens, text_len, b, layout)
        host_ok = host_mem_gb is None or memory.host * min(gpus, gpus_per_node) <= host_mem_gb * GIB
        return memory if memory.gpu <= budget and host_ok else None

    found = []
    for layout in candidates(config, gpus, gpus_per_node, precision, ema):
        memory = fits(layout, batch)
        if memory is not None:
            most = batch
            while most < 1024 and fits(layout, most * 2):
                most *= 2
            found.append(Plan(layout, memory, most))
    return sorted(found, key=Plan.rank_key)


def describe(plan: Plan) -> str:
    lay, mem = plan.layout, plan.memory
    offload = "+".join(name for name, on in (("optimizer", lay.offload_optimizer), ("params", lay.offload_params))
                       if on) or "none"
    return (f"| ZeRO-{lay.zero_stage} | {lay.sequence_parallel} | {lay.checkpointing} | {offload} | "
            f"{mem.states / GIB:.1f} | {mem.activations / GIB:.1f} | {mem.gpu / GIB:.1f} | "
            f"{mem.host / GIB:.1f} | {plan.max_batch}{'+' if plan.max_batch >= 1024 else ''} |")


HEADER = ("| ZeRO | SP | checkpointing | offload | states GiB | activations GiB | GPU total GiB | host GiB/rank "
          "| max batch / SP group (powers of 2) |\n|---|---|---|---|---|---|---|---|---|")


def table(gpus: int = 8) -> str:
    """Best plan per stage bucket on 80 and 141 GB GPUs, one node of ``gpus``."""
    lines = [f"| bucket | tokens | GPU | best plan ({gpus} GPUs) | GPU GiB | max batch / SP group |",
             "|---|---|---|---|---|---|"]
    config = dit_config("allegro-2.8b")
    for stage, frames, height, width in STAGE_BUCKETS:
        for mem in (80, 141):
            found = plans(mem, frames, height, width, gpus)
            best = (f"ZeRO-{found[0].layout.zero_stage}, SP {found[0].layout.sequence_parallel}, "
                    f"checkpointing {found[0].layout.checkpointing}" if found else "does not fit")
            gib = f"{found[0].memory.gpu / GIB:.1f}" if found else "-"
            most = str(found[0].max_batch) if found else "-"
            lines.append(f"| {stage}: {frames}x{height}x{width} | {tokens_of(config, frames, height, width):,} | "
                         f"{mem} GB | {best} | {gib} | {most} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu-mem", type=float, help="GPU memory in GB (80 for H100, 141 for H200)")
    p.add_argument("--frames", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--gpus", type=int, default=8, help="all GPUs of the run (ZeRO shards over all of them)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="SP groups stay inside a node")
    p.add_argument("--batch", type=int, default=1, help="samples a step per SP group (data.batch_size)")
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument("--model", default="allegro-2.8b")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--ema", action="store_true", help="optim.ema_decay is set (an fp32 copy of the weights)")
    p.add_argument("--host-mem", type=float, default=None, help="host memory per node in GB, for offload")
    p.add_argument("--top", type=int, default=5, help="how many fitting layouts to list")
    p.add_argument("--table", action="store_true", help="print the stage-bucket table of docs/parallelism.md")
    args = p.parse_args(argv)
    if not args.table and None in (args.gpu_mem, args.frames, args.height, args.width):
        p.error("--gpu-mem, --frames, --height and --width are required (or --table)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table:
        print(table(args.gpus))
        return
    found = plans(args.gpu_mem, args.frames, args.height, args.width, args.gpus, gpus_per_node=args.gpus_per_node,
                  batch=args.batch, text_len=args.text_len, model=args.model, precision=args.precision,
                  ema=args.ema, host_mem_gb=args.host_mem)
    tokens = tokens_of(dit_config(args.model), args.frames, args.height, args.width)
    print(f"{args.model}, {args.frames}x{args.height}x{args.width} ({tokens:,} tokens), batch {args.batch} per SP "
          f"group, {args.gpus} x {args.gpu_mem:g} GB (plans use {USABLE_FRACTION:.0%})")
    if not found:
        raise SystemExit("nothing fits: more GPUs (ZeRO-3 shards states over all of them), a larger SP degree "
                         "than the heads allow (ring attention, docs/parallelism.md) or a smaller bucket")
    print(f"\nproposed: {found[0].overrides()}\n\n{HEADER}")
    for plan in found[: args.top]:
        print(describe(plan))


if __name__ == "__main__":
    main()
