"""The end-to-end demo: synthetic raw videos -> curation -> VAE -> precompute -> DiT -> samples -> score.

Every step calls the same function its command-line entry point calls, with that entry point's
own config composed from overrides, so the demo exercises what users run at scale:

    step         entry point                                   output under run.dir
    videos       (allegro_train.demo.videos)                   raw/*.mp4 + sidecar captions
    curate       data_recipes/curate.py                        curated/ (catalog, shards, report.json)
    vae          launch/train_vae.py +stage=vae_pretrain       vae/final/vae
    text         (allegro_train.demo.text, tiny T5)            text/{text_encoder,tokenizer}
    precompute   data_recipes/precompute.py                    latents/*.tar, null.t5.npy
    dit          launch/train_dit.py +stage=demo               dit/final/transformer
    export       launch/export.py                              pipeline/ (diffusers layout)
    sample       launch/sample.py's Sampler                    samples/*.mp4, samples/index.json
    score        (allegro_train.demo.detect)                   samples/scores.json

A step whose output is complete is skipped on a rerun with the same ``run.dir`` (the trainers and
the curation resume by themselves), so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from allegro_train.demo.config import DemoConfig
from allegro_train.demo.detect import detect, parse_prompt
from allegro_train.demo.videos import (COLOURS, DIRECTIONS, SHAPES, caption, held_out_prompts, plan_videos,
                                       write_videos)

log = logging.getLogger("allegro_train.demo")

SPM_VOCAB = 80  # BPE on the demo's closed vocabulary: every word one piece (see demo/text.py)
SCORE_BAR = 0.8  # the share of held-out samples whose colour and direction must both be right
# +stage=vae_pretrain at demo size: the tiny registry VAE from scratch, every layer training, single
# process in fp32, SD's loss without LPIPS (no weights to load here).
DEMO_VAE = ("vae.name=allegro-vae-demo", "vae.trainable=all", "loss.lpips=0", "parallel=single",
            "parallel.precision=fp32", "data.batch_size=2", "data.num_workers=0", "optim.lr=1e-3",
            "checkpoint.every_steps=100", "logging.every_steps=10", "validation.num_clips=4")
# +stage=demo on the precomputed demo latents: 16 clips a batch.
DEMO_DIT = ("data.batch_size=16", "checkpoint.every_steps=250", "logging.every_steps=25")


def _bucket(frames: int, size: int) -> str:
    return f"[{{frames: {frames}, height: {size}, width: {size}}}]"


class Demo:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.root = Path(cfg.run.dir).resolve()
        self.timings: dict[str, float] = {}
        self.vae_psnr: float | None = None
        self.dit_loss: tuple[float | None, float | None] = (None, None)

    def extra(self, step: str) -> list[str]:
        """The user's Hydra overrides for ``step``'s own config, applied after the demo's (they win)."""
        return list(self.cfg.overrides.get(step, []))

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        log.info("demo step %s ...", name)
        result = fn()
        self.timings[name] = round(time.perf_counter() - start, 1)
        log.info("demo step %s done in %.1f s", name, self.timings[name])
        return result

    # ---------------------------------------------------------------------------------- steps

    def make_videos(self) -> Path:
        raw = self.root / "raw"
        done = raw / "DONE"
        if not done.is_file():
            v = self.cfg.videos
            specs = plan_videos(v.count, v.scene_frames, v.cut_fraction, self.cfg.run.seed)
            write_videos(raw, specs, v.size, v.fps)
            done.write_text(f"{len(specs)} videos\n")
        return raw

    def curate(self, raw: Path) -> dict[str, Any]:
        from data_recipes.config import load_config
        from data_recipes.pipeline import run

        out = self.root / "curated"
        cfg = load_config([f"input_dir={raw}", f"output_dir={out}", f"workers={self.cfg.workers}",
                           # the probe's 360p floor scaled to the demo's size; the rest are the defaults
                           f"probe.min_short_side={self.cfg.videos.size}", *self.extra("curate")])
        return run(cfg)

    def train_vae(self, shards: list[str]) -> Path:
        from allegro_train.config import load_vae_config
        from allegro_train.training.vae_trainer import train_vae

        c = self.cfg
        listed = f"[{','.join(shards)}]"
        cfg = load_vae_config([
            "+stage=vae_pretrain", f"run.dir={self.root / 'vae'}", f"run.seed={c.run.seed}",
            f"train.max_steps={c.steps.vae}", f"logging.wandb_mode={c.wandb_mode}", f"data.shards={listed}",
            f"data.frame_stride={c.clip.frame_stride}", f"data.buckets={_bucket(8, c.videos.size)}",
            # Demo size: trained from scratch (no image VAE to inflate), every layer, no LPIPS weights.
            *DEMO_VAE, f"validation.every_steps={c.steps.vae}", f"validation.shards={listed}",
            *self.extra("vae")])
        summary = train_vae(cfg)
        self.vae_psnr = summary.get("psnr")
        return Path(summary["vae"])

    def build_text_encoder(self) -> Path:
        from allegro_train.demo.text import build_tiny_t5

        folder = self.root / "text"
        if not (folder / "text_encoder" / "config.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            captions = [caption(c, s, d) for c, s, d in itertools.product(COLOURS, SHAPES, DIRECTIONS)]
            # every caption, the held-out ones too: a tokenizer trained on the training captions
            # alone would still split them into the same words, but this keeps the vocab explicit
            build_tiny_t5(folder, captions * 8, SPM_VOCAB, seed=self.cfg.run.seed, model_type="bpe")
        return folder

    def precompute(self, shards: list[str], vae: Path, text: Path) -> dict[str, Any]:
        from data_recipes.encode_shards import run
        from data_recipes.precompute_config import load_config

        c = self.cfg
        pattern = shards[0] if len(shards) == 1 else "{" + ",".join(shards) + "}"
        cfg = load_config([f"shards={pattern}", f"output_dir={self.root / 'latents'}", f"vae={vae}",
                           f"text_encoder={text}", f"buckets={_bucket(c.clip.frames, c.videos.size)}",
                           f"frame_stride={c.clip.frame_stride}", "device=cpu", "text_dtype=fp32",
                           f"seed={c.run.seed}", *self.extra("precompute")])
        return run(cfg)

    def train_dit(self, latents: Path, null_caption: str) -> Path:
        from allegro_train.config import load_config
        from allegro_train.training.trainer import train

        c = self.cfg
        cfg = load_config([
            "+stage=demo", f"run.dir={self.root / 'dit'}", f"run.seed={c.run.seed}",
            f"train.max_steps={c.steps.dit}", f"logging.wandb_mode={c.wandb_mode}",
            f"data.shards=[{latents}/*.tar]", f"data.null_caption={null_caption}",
            f"data.buckets={_bucket(c.clip.frames, c.videos.size)}", *DEMO_DIT,
            *self.extra("dit")])
        summary = train(cfg)
        self.dit_loss = (summary.get("first_loss"), summary.get("last_loss"))
        return Path(summary["transformer"])

    def export(self, transformer: Path, vae: Path, text: Path) -> Path:
        from allegro_train.sampling.export import export_pipeline

        return export_pipeline(transformer, self.root / "pipeline", vae=vae, text_encoder=text, overwrite=True)

    def sample(self, pipeline: Path) -> list[dict[str, Any]]:
        import torch

        from allegro_train.sampling.sampler import Sampler
        from allegro_train.sampling.video import write_video

        c = self.cfg
        torch.manual_seed(c.run.seed)
        sampler = Sampler.from_pretrained(pipeline, scheduler=c.sample.scheduler, device="cpu", dtype=torch.float32)
        out = self.root / "samples"
        shutil.rmtree(out, ignore_errors=True)
        index = []
        prompts = held_out_prompts()
        for seed in range(c.sample.seeds):
            # one batch a seed: all prompts together, as the sampler batches them
            videos = sampler.sample(prompts, num_frames=c.clip.frames, height=c.videos.size, width=c.videos.size,
                                    steps=c.steps.sample, guidance=c.sample.guidance, seed=c.run.seed * 1000 + seed)
            for i, (prompt, frames) in enumerate(zip(prompts, videos)):
                path = write_video(frames, out / f"sample_{seed:02d}_{i:03d}.mp4", fps=c.videos.fps // c.clip.frame_stride)
                write_video(frames, path.with_suffix(".npy"))  # exact frames, which the score reads
                index.append({"file": path.name, "prompt": prompt, "seed": seed})
        (out / "index.json").write_text(json.dumps([{"file": e["file"], "prompt": e["prompt"]} for e in index], indent=2))
        return index

    def score(self, index: list[dict[str, Any]]) -> dict[str, Any]:
        import numpy as np

        out = self.root / "samples"
        rows = []
        for entry in index:
            frames = np.load(out / Path(entry["file"]).with_suffix(".npy"))
            found = detect(frames)
            colour, direction = parse_prompt(entry["prompt"])
            rows.append({**entry, "detected_colour": found.colour, "detected_direction": found.direction,
                         "travel": round(found.travel, 3), "colour_ok": found.colour == colour,
                         "direction_ok": found.direction == direction,
                         "ok": found.colour == colour and found.direction == direction})
        n = max(len(rows), 1)
        result = {"score": sum(r["ok"] for r in rows) / n, "colour_accuracy": sum(r["colour_ok"] for r in rows) / n,
                  "direction_accuracy": sum(r["direction_ok"] for r in rows) / n, "samples": rows}
        (out / "scores.json").write_text(json.dumps(result, indent=2))
        return result

    # ---------------------------------------------------------------------------------- report

    def log_to_wandb(self, result: dict[str, Any]) -> Path:
        from allegro_train.training.metrics import MetricsLogger

        logger = MetricsLogger(self.root, True, str(self.cfg.wandb_mode), "allegro_train", None, "demo_e2e",
                               OmegaConf.to_container(OmegaConf.structured(self.cfg), resolve=True, enum_to_str=True))
        logger.log(0, {"demo/score": result["score"], "demo/colour_accuracy": result["colour_accuracy"],
                       "demo/direction_accuracy": result["direction_accuracy"],
                       **{f"demo/seconds/{k}": v for k, v in self.timings.items()}})
        samples = self.root / "samples"
        logger.log_videos(0, [(samples / r["file"], f"{r['prompt']} -> {r['detected_colour']} {r['detected_direction']}")
                              for r in result["samples"]], key="demo/samples")
        logger.close()
        return logger.path

    def table(self, result: dict[str, Any]) -> str:
        lines = [f"{'prompt':32} {'seed':>4}  {'detected':18} ok"]
        for r in result["samples"]:
            found = f"{r['detected_colour']} {r['detected_direction']}"
            lines.append(f"{r['prompt']:32} {r['seed']:>4}  {found:18} {'yes' if r['ok'] else 'no'}")
        lines.append(f"score (colour and direction right, held-out prompts): {result['score']:.0%} "
                     f"(colour {result['colour_accuracy']:.0%}, direction {result['direction_accuracy']:.0%}); "
                     f"bar {SCORE_BAR:.0%}")
        return "\n".join(lines)

    def closing_lines(self, result: dict[str, Any]) -> str:
        """Where everything is, and how to look at the W&B runs (offline unless wandb_mode=online)."""
        seconds = result["seconds"]
        lines = [f"demo run in {self.root} ({seconds['total']:.0f} s: "
                 + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total") + ")",
                 f"  VAE held-out PSNR {result['vae_psnr']} dB; DiT loss {result['dit_loss_first_last'][0]} -> "
                 f"{result['dit_loss_first_last'][1]} (first and last fifth of its steps)",
                 f"  samples: {self.root / 'samples'} (index.json, scores.json)",
                 f"  metrics: {self.root / 'vae' / 'metrics.jsonl'}, {self.root / 'dit' / 'metrics.jsonl'}"]
        runs = sorted(self.root.glob("**/wandb/offline-run-*"))
        if runs:
            lines.append("  view the W&B runs (VAE, DiT, demo score + samples) in the terminal with:\n"
                         + "".join(f"    wandb leet {r}\n" for r in runs)
                         + "  or upload them to W&B with:\n    wandb sync " + " ".join(str(r) for r in runs))
        elif str(self.cfg.wandb_mode) == "online":
            lines.append("  W&B runs were logged online: see the URLs printed above")
        return "\n".join(lines)

    def run(self) -> dict[str, Any]:
        self.root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        raw = self.step("videos", self.make_videos)
        report = self.step("curate", lambda: self.curate(raw))
        shards = report["shards"]
        if not shards:
            raise RuntimeError(f"curation kept no clips: see {self.root / 'curated' / 'report.json'}")
        vae = self.step("vae", lambda: self.train_vae(shards))
        text = self.step("text", self.build_text_encoder)
        summary = self.step("precompute", lambda: self.precompute(shards, vae, text))
        transformer = self.step("dit", lambda: self.train_dit(self.root / "latents", summary["null_caption"]))
        pipeline = self.step("export", lambda: self.export(transformer, vae, text))
        index = self.step("sample", lambda: self.sample(pipeline))
        result = self.step("score", lambda: self.score(index))
        result["seconds"] = {**self.timings, "total": round(time.perf_counter() - start, 1)}
        result["vae_psnr"] = self.vae_psnr
        result["dit_loss_first_last"] = list(self.dit_loss)
        result["metrics"] = str(self.log_to_wandb(result))
        (self.root / "demo.json").write_text(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
        return result
