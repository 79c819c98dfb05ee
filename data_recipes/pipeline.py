"""Compose the stages into a run: raw videos -> clips -> catalog -> selection -> shards -> report.

The per-video stages (probe, split, score, caption) run as one task per raw video on the backend
and end by writing ``work/<key>.json`` atomically. A rerun reuses every work file whose source
fingerprint (size, mtime) and stage settings still match, so a run killed midway resumes, and a
run with only new select settings re-scores nothing. A video without a matching work file is
curated from scratch (its clips from an earlier attempt are deleted first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from data_recipes.backends import build_backend
from data_recipes.captioners import Captioner, build_captioners
from data_recipes.catalog import catalog_paths, write_catalog
from data_recipes.config import VIDEO_STAGES, CurateConfig, Stage
from data_recipes.records import InputError, VideoRecord, fingerprint, source_key
from data_recipes.report import build_report
from data_recipes.scorers import Scorer, build_scorers
from data_recipes.stages.caption import caption_clips
from data_recipes.stages.probe import probe_video
from data_recipes.stages.score import score_clips
from data_recipes.stages.select import select
from data_recipes.stages.shard import write_shards
from data_recipes.stages.split import cut_windows, detect_scenes, plan_windows

log = logging.getLogger("data_recipes")


@dataclasses.dataclass
class VideoTask:
    """One raw video's work, picklable for worker processes."""

    path: Path
    source: str
    key: str
    fingerprint: str
    signature: str
    output_dir: Path
    cfg: CurateConfig


def discover(input_dir: Path, extensions: list[str]) -> list[tuple[Path, str, str]]:
    """(path, source relative to input_dir, key) of every video file, sorted; keys made unique."""
    wanted = {e.lower() for e in extensions}
    paths = sorted(p for p in input_dir.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    found, seen = [], set()
    for path in paths:
        relative = path.relative_to(input_dir)
        key = source_key(relative)
        if key in seen:  # e.g. "a/b.mp4" and "a_b.mp4": keep both, told apart by a path hash
            key = f"{key}-{hashlib.sha1(str(relative).encode()).hexdigest()[:8]}"
        seen.add(key)
        found.append((path, str(relative), key))
    return found


def stage_signature(cfg: CurateConfig) -> str:
    """Hash of every setting the per-video stages read; select and shard settings are left out."""
    settings = {name: dataclasses.asdict(getattr(cfg, name)) for name in ("probe", "split", "score", "caption")}
    settings["stages"] = [Stage(s).value for s in cfg.stages if Stage(s) in VIDEO_STAGES]
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


_WORKER_CACHE: dict[str, tuple[list[Scorer], list[Captioner]]] = {}


def _plugins(task: VideoTask) -> tuple[list[Scorer], list[Captioner]]:
    """Scorers and captioners built once per process (model scorers load weights)."""
    if task.signature not in _WORKER_CACHE:
        stages = set(task.cfg.stages)
        scorers = build_scorers(task.cfg.score) if Stage.score in stages else []
        captioners = build_captioners(task.cfg.caption) if Stage.caption in stages else []
        _WORKER_CACHE[task.signature] = (scorers, captioners)
    return _WORKER_CACHE[task.signature]


def _remove_clips(clip_dir: Path, key: str) -> None:
    pattern = re.compile(rf"{re.escape(key)}_\d{{3,}}(\.partial)?\.mp4")
    for path in clip_dir.glob(f"{key}_*.mp4"):
        if pattern.fullmatch(path.name):
            path.unlink()


def process_video(task: VideoTask) -> VideoRecord:
    """Probe, split, score and caption one raw video. Bad input sets ``status``; it never raises."""
    cfg, stages = task.cfg, set(task.cfg.stages)
    record = VideoRecord(source=task.source, key=task.key, fingerprint=task.fingerprint, signature=task.signature)
    clip_dir = task.output_dir / "clips"
    _remove_clips(clip_dir, task.key)
    try:
        info = probe_video(task.path, record, cfg.probe)
        if info is not None and Stage.split in stages:
            windows, too_short = plan_windows(detect_scenes(task.path, cfg.split), info.fps, cfg.split)
            record.clips_detected, record.clips_too_short = len(windows) + too_short, too_short
            record.clips = cut_windows(task.path, task.source, task.key, info, windows, clip_dir,
                                       task.output_dir, cfg.split)
            scorers, captioners = _plugins(task)
            # Captions first (the stage list still reads probe, split, score, caption): both run in
            # this one task, and clip_similarity scores a clip against its caption.
            if Stage.caption in stages:
                caption_clips(task.path, record.clips, captioners, task.output_dir)
            if Stage.score in stages:
                score_clips(record.clips, scorers, task.output_dir, cfg.score)
    except InputError as err:
        _remove_clips(clip_dir, task.key)
        record.status, record.error, record.clips = err.reason, str(err), []
    return record


def _work_path(output_dir: Path, key: str) -> Path:
    return output_dir / "work" / f"{key}.json"


def _load_work(path: Path, fingerprint_: str, signature: str) -> Optional[VideoRecord]:
    """The finished record in ``path`` if it matches the source and settings, else None."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("fingerprint") != fingerprint_ or data.get("signature") != signature:
        return None
    return VideoRecord.from_json(data)


def _save_work(path: Path, record: VideoRecord) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(record.to_json(), indent=1))
    os.replace(tmp, path)


def curate_videos(cfg: CurateConfig, output_dir: Path) -> list[VideoRecord]:
    """Run the per-video stages over ``input_dir`` (reusing finished work) and return every record."""
    signature = stage_signature(cfg)
    (output_dir / "work").mkdir(parents=True, exist_ok=True)
    (output_dir / "clips").mkdir(parents=True, exist_ok=True)
    records: dict[str, VideoRecord] = {}
    todo: list[VideoTask] = []
    for path, source, key in discover(Path(cfg.input_dir), cfg.probe.extensions):
        task = VideoTask(path, source, key, fingerprint(path), signature, output_dir, cfg)
        done = _load_work(_work_path(output_dir, key), task.fingerprint, signature)
        if done is not None:
            records[key] = done
        else:
            todo.append(task)
    log.info("%d videos: %d already curated, %d to do", len(records) + len(todo), len(records), len(todo))
    for record in build_backend(cfg).map(process_video, todo, desc="curate"):
        if record.status != "ok":
            log.warning("skipped %s (%s): %s", record.source, record.status, record.error or "")
        _save_work(_work_path(output_dir, record.key), record)
        records[record.key] = record
    return [records[k] for k in sorted(records)]


def run(cfg: CurateConfig) -> dict[str, Any]:
    """Run the configured stages and write ``output_dir/report.json``; return the report."""
    if not dataclasses.is_dataclass(cfg):
        cfg = OmegaConf.to_object(cfg)  # plain dataclasses: picklable for worker processes
    output_dir = Path(cfg.output_dir).resolve()
    stages = [Stage(s) for s in cfg.stages]
    if stages[0] is Stage.probe:
        write_catalog(curate_videos(cfg, output_dir), output_dir, list(cfg.score.scorers) if Stage.score in stages else [])
    video_catalog, clip_catalog = catalog_paths(output_dir)
    selection = select(clip_catalog, cfg.select) if Stage.select in stages else None
    shards = write_shards(selection.kept, output_dir, cfg.select.name, cfg.shard) if Stage.shard in stages else []
    report = build_report(video_catalog, clip_catalog, selection, cfg.select.name, shards, stages)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    if Stage.shard in stages:
        (output_dir / "shards" / cfg.select.name / "manifest.json").write_text(json.dumps(report, indent=2))
    log.info("report: %s", json.dumps({k: report[k] for k in ("videos_seen", "videos_corrupt", "clips_detected", "clips_kept", "dropped")}))
    return report
