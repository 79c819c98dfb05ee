"""Curation throughput per stage on CPU: clips/s per core for probe, split, frame sampling, each
scorer, captioning and sharding, plus whole runs on each backend.

    python benchmarks/curate_stages.py                          # tiny random models (plumbing cost only)
    python benchmarks/curate_stages.py --models real --model-clips 2 --end-to-end

Raw videos are made first with ffmpeg: ``--videos`` of ``--size`` at 25 fps, each three 4 s scenes
(testsrc2, smptebars, a moving mandelbrot) joined by hard cuts, so each yields three 3.2 s clips.
Every stage then runs in this one process (torch and OpenCV on one thread), over every clip
(model stages over the first ``--model-clips``). Each row gives the wall time and the CPU time of
this process and its children (ffmpeg, whose encoder threads all count): "clips/CPU-s" is clips a
second per core, the figure to scale a cluster by, and moves much less than wall time on a shared
machine. Clips start 10 frames into a scene, off a keyframe, so they are re-encoded (libx264
veryfast), the usual case. ``--models real`` builds the real architectures with random weights: CLIP ViT-L/14 for
the aesthetic and CLIP-similarity scorers, a ResNet-18 DB network (ONNX) for text area, and a
LLaVA of CLIP ViT-L/14-336 with a Qwen2-0.5B-sized language model for captions; compute is that of
trained weights, except that random weights find no text and never stop a caption early (each
runs to ``max_new_tokens``). ``--end-to-end`` adds whole ``pipeline.run`` timings (wall only: Ray's
workers are not this process's children). Results go to docs/benchmarks.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: one core per measurement
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from data_recipes.captioners.sidecar import SidecarCaptioner  # noqa: E402
from data_recipes.catalog import write_catalog  # noqa: E402
from data_recipes.config import MODEL_PATHS, load_config  # noqa: E402
from data_recipes.media import sample_frames  # noqa: E402
from data_recipes.pipeline import VideoTask, discover, stage_signature  # noqa: E402
from data_recipes.records import VideoRecord, fingerprint  # noqa: E402
from data_recipes.scorers import build_scorers  # noqa: E402
from data_recipes.stages.probe import probe_video  # noqa: E402
from data_recipes.stages.select import select  # noqa: E402
from data_recipes.stages.shard import write_shards  # noqa: E402
from data_recipes.stages.split import cut_windows, detect_scenes, plan_windows  # noqa: E402
from tests.data_recipes.conftest import ffmpeg  # noqa: E402

SCENE_SECONDS, RATE = 4, 25
VIT_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
               patch_size=14, projection_dim=768)  # openai/clip-vit-large-patch14's vision tower


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=4, help="raw videos (three clips each)")
    p.add_argument("--size", default="640x360", help="raw video size, WxH")
    p.add_argument("--models", choices=("tiny", "real"), default="tiny")
    p.add_argument("--model-clips", type=int, default=4, help="clips the model scorers and the VLM run on")
    p.add_argument("--max-new-tokens", type=int, default=64, help="caption length of the VLM")
    p.add_argument("--end-to-end", action="store_true", help="also time whole runs: local x1, local x2, Ray (2 CPUs)")
    p.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    return p.parse_args(argv)


def make_videos(raw: Path, count: int, size: str) -> None:
    sources = [f"testsrc2=size={size}:rate={RATE}", f"smptebars=size={size}:rate={RATE}",
               f"mandelbrot=size={size}:rate={RATE}"]
    raw.mkdir(parents=True, exist_ok=True)
    for v in range(count):
        inputs = [arg for s in sources for arg in ("-f", "lavfi", "-t", str(SCENE_SECONDS), "-i", s)]
        ffmpeg(*inputs, "-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1[v]", "-map", "[v]",
               "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p", str(raw / f"video_{v:02d}.mp4"))
        (raw / f"video_{v:02d}.txt").write_text("a test pattern, colour bars, then a fractal\n")


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


ROWS: list[dict[str, Any]] = []


def timed(stage: str, clips: int, fn: Callable[[], Any]) -> Any:
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    ROWS.append({"stage": stage, "clips": clips, "wall_s": wall, "cpu_s": cpu,
                 "clips_per_s": clips / wall, "clips_per_cpu_s": clips / cpu if cpu > 0 else float("inf")})
    print(f"{stage:32s} {clips:4d} clips {wall:8.2f} s wall {cpu:8.2f} s CPU {clips / wall:9.2f} clips/s", flush=True)
    return result


# ---------------------------------------------------------------- real-size models (random weights)

def build_real_clip(folder: Path) -> Path:
    """CLIP ViT-L/14 (openai/clip-vit-large-patch14's sizes) with the tests' letter tokenizer."""
    from tests.data_recipes.tiny_models import build_tiny_clip
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    build_tiny_clip(folder)  # the tokenizer; the model is replaced below
    tokenizer = CLIPProcessor.from_pretrained(folder).tokenizer
    config = CLIPConfig(projection_dim=768, vision_config=VIT_L14, text_config=dict(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, projection_dim=768))
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_real_aesthetic(folder: Path) -> tuple[Path, Path]:
    """The aesthetic scorer's parts: a CLIP ViT-L/14 vision tower and a head of LAION's sizes."""
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L14)).save_pretrained(folder / "embedder")
    CLIPImageProcessor().save_pretrained(folder / "embedder")
    sizes = [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    save_file({k: v for i, (n, m) in zip((0, 2, 4, 6, 7), sizes)
               for k, v in ((f"layers.{i}.weight", torch.randn(m, n) * 0.02), (f"layers.{i}.bias", torch.zeros(m)))},
              str(folder / "head.safetensors"))
    return folder / "embedder", folder / "head.safetensors"


def build_real_db(path: Path) -> Path:
    """DB (Liao et al.) on ResNet-18, the architecture of OpenCV's DB_TD500/IC15 resnet18 models."""
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                                nn.BatchNorm2d(cout))
        return nn.ModuleDict({"body": body, "skip": skip})

    class DB(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
            self.stages = nn.ModuleList(nn.ModuleList([block(a, b, s), block(b, b, 1)]) for a, b, s in widths)
            self.lateral = nn.ModuleList(nn.Conv2d(c, 256, 1, bias=False) for _, c, _ in widths)
            self.smooth = nn.ModuleList(nn.Conv2d(256, 64, 3, 1, 1, bias=False) for _ in widths)
            self.head = nn.Sequential(nn.Conv2d(256, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.ConvTranspose2d(64, 64, 2, 2), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.ConvTranspose2d(64, 1, 2, 2), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [1, 3, H, W] -> [H, W]
            x, features = self.stem(x), []
            for stage in self.stages:
                for b in stage:
                    x = torch.relu(b["body"](x) + b["skip"](x))
                features.append(x)
            maps = [lateral(f) for lateral, f in zip(self.lateral, features)]
            for i in range(len(maps) - 2, -1, -1):  # top-down: 1/32 -> 1/4
                maps[i] = maps[i] + nn.functional.interpolate(maps[i + 1], size=maps[i].shape[-2:])
            size = maps[0].shape[-2:]
            fused = torch.cat([nn.functional.interpolate(s(m), size=size) for s, m in zip(self.smooth, maps)], 1)
            return self.head(fused)[0, 0]

    torch.onnx.export(DB().eval(), (torch.zeros(1, 3, 256, 448),), str(path), dynamo=False, input_names=["image"],
                      output_names=["text_map"], dynamic_axes={"image": {2: "h", 3: "w"}}, opset_version=13)
    return path


def build_real_vlm(folder: Path) -> Path:
    """LLaVA with CLIP ViT-L/14-336 and a Qwen2-0.5B-sized language model (151,936-token vocabulary)."""
    from tests.data_recipes.tiny_models import build_tiny_llava
    from transformers import (AutoProcessor, CLIPImageProcessor, CLIPVisionConfig, GenerationConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast, Qwen2Config)
    from tokenizers import Tokenizer, models, pre_tokenizers

    build_tiny_llava(folder)  # its chat template and special tokens
    tiny = AutoProcessor.from_pretrained(folder)
    vocab = dict(tiny.tokenizer.get_vocab())
    vocab.update({f"w{i}": i for i in range(len(vocab), 151936)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 336},
                                                                  crop_size={"height": 336, "width": 336}),
                               tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                               chat_template=tiny.chat_template, num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14)
    text = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text,
                                                      image_token_id=vocab["<image>"], vision_feature_layer=-2))
    model.generation_config = GenerationConfig(suppress_tokens=list(range(5)), pad_token_id=1, eos_token_id=3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def model_overrides(root: Path, kind: str) -> list[str]:
    from tests.data_recipes.tiny_models import build_bright_text_detector, build_tiny_clip, build_tiny_llava

    if kind == "tiny":
        clip = build_tiny_clip(root / "clip")
        embedder, head = clip, None
        ocr, vlm = build_bright_text_detector(root / "ocr.onnx"), build_tiny_llava(root / "vlm")
    else:
        clip = build_real_clip(root / "clip")
        embedder, head = build_real_aesthetic(root / "aesthetic")
        ocr, vlm = build_real_db(root / "db_resnet18.onnx"), build_real_vlm(root / "vlm")
    overrides = [f"score.clip_similarity.model_path={clip}", f"score.text_area.model_path={ocr}", f"caption.vlm.path={vlm}"]
    if head is not None:
        overrides += [f"score.aesthetic.embedder_path={embedder}", f"score.aesthetic.head_path={head}"]
    return overrides


# ---------------------------------------------------------------- the stages

def run_stages(args: argparse.Namespace, work: Path) -> None:
    raw, out = work / "raw", work / "out"
    make_videos(raw, args.videos, args.size)
    scorers = ["brightness", "black_border", "clarity", "motion", "frame_diff", "clip_similarity", "text_area"]
    scorers += ["aesthetic"] if args.models == "real" else []
    cfg = load_config([f"input_dir={raw}", f"output_dir={out}", f"score.scorers=[{','.join(scorers)}]",
                       f"caption.vlm.max_new_tokens={args.max_new_tokens}", *model_overrides(work / "models", args.models)])
    cfg = OmegaConf.to_object(cfg)
    tasks = [VideoTask(p, s, k, fingerprint(p), stage_signature(cfg), out, cfg)
             for p, s, k in discover(raw, cfg.probe.extensions)]
    records = [VideoRecord(source=t.source, key=t.key, fingerprint=t.fingerprint, signature=t.signature) for t in tasks]
    (out / "clips").mkdir(parents=True)
    n_clips = 3 * len(tasks)  # every stage's rate is in clips, including the per-video ones

    infos = timed("probe", n_clips, lambda: [probe_video(t.path, r, cfg.probe) for t, r in zip(tasks, records)])
    scenes = timed("split: detect scenes", n_clips, lambda: [detect_scenes(t.path, cfg.split) for t in tasks])
    windows = [plan_windows(s, info.fps, cfg.split)[0] for s, info in zip(scenes, infos)]

    def cut_all() -> None:
        for t, r, info, w in zip(tasks, records, infos, windows):
            r.clips = cut_windows(t.path, t.source, t.key, info, w, out / "clips", out, cfg.split)

    timed("split: cut clips (ffmpeg)", n_clips, cut_all)
    clips = [c for r in records for c in r.clips]
    assert len(clips) == n_clips, f"expected {n_clips} clips, cut {len(clips)}"
    timed("caption: sidecar", len(clips), lambda: [SidecarCaptioner().caption(t.path, r.clips, out)
                                                   for t, r in zip(tasks, records)])
    frames = timed("score: sample frames", len(clips), lambda: [
        sample_frames(out / c.clip_path, cfg.score.num_frames, c.num_frames, cfg.score.short_side) for c in clips])
    for f, c in zip(frames, clips):
        f.caption = "a test pattern, colour bars, then a fractal"
        c.caption = f.caption
    for scorer in build_scorers(cfg.score):
        n = args.model_clips if scorer.name in MODEL_PATHS else len(clips)
        values = timed(f"score: {scorer.name}", n, lambda: [scorer(f) for f in frames[:n]])
        for clip, value in zip(clips, values):
            clip.scores[scorer.name] = value
    from data_recipes.captioners.vlm import VLMCaptioner

    vlm = VLMCaptioner(cfg.caption.vlm)
    subset = clips[:args.model_clips]
    timed(f"caption: VLM ({cfg.caption.vlm.num_frames} frames, {args.max_new_tokens} tokens)", len(subset),
          lambda: vlm.caption(tasks[0].path, subset, out))
    _, clip_catalog = timed("catalog: write Parquet", len(clips), lambda: write_catalog(records, out, scorers))
    timed(f"select (DuckDB, preset {cfg.select.name})", len(clips), lambda: select(clip_catalog, cfg.select))
    every = select(clip_catalog, type(cfg.select)(name="all")).kept  # shard them all: the same work per clip
    timed("shard (WebDataset)", len(every), lambda: write_shards(every, out, "bench", cfg.shard))


def run_end_to_end(args: argparse.Namespace, work: Path) -> None:
    """Whole runs (probe..shard, pixel scorers, sidecar captions) on each backend, wall time only."""
    from data_recipes.pipeline import run

    raw = work / "raw"
    cases = [("run: local, workers=1", []), ("run: local, workers=2", ["workers=2"]), ("run: Ray, 2 CPUs", ["backend=ray"])]
    for name, extra in cases:
        if "backend=ray" in extra:
            import ray

            ray.init(num_cpus=2, include_dashboard=False)
        out = work / f"e2e_{len(ROWS)}"
        report = timed(name, 3 * args.videos, lambda: run(load_config([f"input_dir={raw}", f"output_dir={out}",
                                                                       "select=all", *extra])))
        assert report["clips_cataloged"] == 3 * args.videos, report
        ROWS[-1]["cpu_s"] = ROWS[-1]["clips_per_cpu_s"] = None  # pool and Ray workers: CPU not all counted here


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        run_stages(args, work)
        if args.end_to_end:
            run_end_to_end(args, work)
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                                 f"OpenCV {cv2.__version__}", "load_before": load, "load_after": os.getloadavg(),
                      "args": {k: str(v) for k, v in vars(args).items()}, "rows": ROWS}, indent=1))


if __name__ == "__main__":
    main()
