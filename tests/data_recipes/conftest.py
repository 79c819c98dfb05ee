"""Raw videos made with ffmpeg's lavfi sources: one of each case the funnel must handle.

Tiny (128x96, 25 fps, a few seconds) so the whole curation suite runs in seconds on two cores.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SIZE, RATE = "128x96", 25
# Thresholds scaled to tiny videos: the 360p limit becomes 64 px; the rest are the report's.
TINY = ["probe.min_short_side=64"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def lavfi(out: Path, source: str, *extra: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", source, *extra, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
    return out


def hard_cut(out: Path) -> Path:
    """3 s of testsrc then 3 s of flat orange: one hard cut at frame 75 (3.0 s)."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate={RATE}:duration=3",
           "-f", "lavfi", "-i", f"color=c=orange:size={SIZE}:rate={RATE}:duration=3",
           "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
    return out


@pytest.fixture(scope="session")
def raw_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.fail("the curation tests need the ffmpeg command (apt-get install ffmpeg)")
    raw = tmp_path_factory.mktemp("raw")
    hard_cut(raw / "cut.mp4")
    (raw / "cut.txt").write_text("a test pattern, then an orange wall\n")
    lavfi(raw / "dark.mp4", f"color=c=black:size={SIZE}:rate={RATE}:duration=3")
    lavfi(raw / "short.mp4", f"testsrc=size={SIZE}:rate={RATE}:duration=1")
    lavfi(raw / "slow.mp4", f"testsrc=size={SIZE}:rate=10:duration=3")
    (raw / "nested").mkdir()
    lavfi(raw / "nested" / "small.mp4", f"testsrc=size=48x32:rate={RATE}:duration=3")
    (raw / "corrupt.mp4").write_bytes(bytes(range(256)) * 64)
    whole = (raw / "cut.mp4").read_bytes()
    (raw / "truncated.mp4").write_bytes(whole[: len(whole) // 2])  # the moov atom sits at the end
    (raw / "notes.md").write_text("not a video: ignored by extension")
    return raw
