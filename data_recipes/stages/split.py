"""Split stage: PySceneDetect finds the cuts; each scene becomes 2-16 s clips cut with ffmpeg.

The first and last ``trim_frames`` of a scene are dropped (transitions and fades the detector
misses); scenes longer than ``max_seconds`` are cut into equal pieces; windows shorter than
``min_seconds`` are counted and dropped. A clip whose start falls on a source keyframe is cut by
copying packets (no quality loss, fast); any other is re-encoded, since a copy must start on a
keyframe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av

from data_recipes.config import SplitConfig
from data_recipes.media import VideoInfo, cut, keyframe_times, probe
from data_recipes.records import ClipRecord, InputError


@dataclass
class Window:
    start_frame: int
    num_frames: int


def detect_scenes(path: Path, cfg: SplitConfig) -> list[tuple[int, int]]:
    """Scenes as (first frame, end frame exclusive), from PySceneDetect's ContentDetector.

    Opens the video with PySceneDetect's PyAV backend directly: ``scenedetect.detect`` would fall
    back to OpenCV silently when PyAV fails, and a failure here must count the file as corrupt.
    """
    try:
        from scenedetect import ContentDetector, SceneManager, VideoOpenFailure
        from scenedetect.backends.pyav import VideoStreamAv
    except ImportError as err:
        raise ImportError("the split stage needs PySceneDetect: pip install opencv-python-headless && "
                          "pip install --no-deps scenedetect (its metadata pulls GUI opencv-python)") from err
    try:
        video = VideoStreamAv(str(path), suppress_output=True)
        manager = SceneManager()
        manager.add_detector(ContentDetector(threshold=cfg.threshold, min_scene_len=cfg.min_scene_frames))
        manager.detect_scenes(video)
        scenes = manager.get_scene_list(start_in_scene=True)
    except (VideoOpenFailure, av.FFmpegError, OSError) as err:
        raise InputError("corrupt", f"{path}: scene detection failed ({type(err).__name__}: {err})") from err
    return [(start.frame_num, end.frame_num) for start, end in scenes]


def plan_windows(scenes: list[tuple[int, int]], fps: float, cfg: SplitConfig) -> tuple[list[Window], int]:
    """Clip windows for the scenes, and how many candidate windows were too short."""
    windows: list[Window] = []
    too_short = 0
    for start, end in scenes:
        first, last = start + cfg.trim_frames, end - cfg.trim_frames  # [first, last)
        length = last - first
        if length <= 0 or length / fps < cfg.min_seconds:
            too_short += 1
            continue
        pieces = math.ceil(length / fps / cfg.max_seconds)
        bounds = [first + round(i * length / pieces) for i in range(pieces + 1)]
        windows += [Window(a, b - a) for a, b in zip(bounds, bounds[1:])]
    return windows, too_short


def cut_windows(src: Path, source: str, source_key: str, info: VideoInfo, windows: list[Window],
                out_dir: Path, rel_root: Path, cfg: SplitConfig) -> list[ClipRecord]:
    """Cut each window to ``out_dir/<key>.mp4`` and describe the clip as written (re-probed)."""
    keyframes = keyframe_times(src) if cfg.stream_copy else []
    half_frame = 0.5 / info.fps
    clips = []
    for index, window in enumerate(windows):
        key = f"{source_key}_{index:03d}"
        dst = out_dir / f"{key}.mp4"
        start = window.start_frame / info.fps
        copy = any(abs(k - start) < half_frame for k in keyframes)
        cut(src, dst, start, window.num_frames, copy, cfg.crf, cfg.encode_preset)
        clip = probe(dst, count_frames=True)
        if clip.num_frames < 2:
            raise InputError("corrupt", f"{src}: the clip {dst.name} cut at {start:.3f}s has {clip.num_frames} frames")
        clips.append(ClipRecord(
            key=key, source=source, clip_path=str(dst.relative_to(rel_root)), clip_start=round(start, 6),
            clip_end=round(start + clip.num_frames / info.fps, 6), fps=clip.fps, num_frames=clip.num_frames,
            height=clip.height, width=clip.width, codec=clip.codec, cut="copy" if copy else "encode"))
    return clips
