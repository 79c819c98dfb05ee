"""A shortened demo through its command line: every step runs and leaves what the next one reads.

The real demo's score (>= 80 % on held-out prompts) needs the full step counts and is reported in
docs/demo.md; this run is too short to learn, so it checks plumbing and outputs, not the score.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from allegro_train.demo.config import DemoConfigError, load_demo_config
from allegro_train.demo.videos import held_out_prompts

REPO = Path(__file__).resolve().parents[2]
QUICK = ["videos.count=16", "videos.cut_fraction=0.5", "steps.vae=3", "steps.dit=4", "steps.sample=2",
         "sample.seeds=1", "workers=1", "wandb_mode=offline"]


@pytest.mark.slow
def test_shortened_demo_end_to_end(tmp_path):
    run = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(REPO / "launch" / "demo.py"), f"run.dir={run}", *QUICK],
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    report = json.loads((run / "curated" / "report.json").read_text())
    videos = len(list((run / "raw").glob("*.mp4")))  # 16, about half of them with a hard cut
    assert report["videos_seen"] == videos == 16
    assert report["clips_detected"] > 16 and report["clips_kept"] == report["clips_detected"]

    for folder in ("vae/final/vae", "dit/final/transformer", "pipeline/transformer", "pipeline/vae",
                   "pipeline/text_encoder", "pipeline/tokenizer", "pipeline/scheduler"):
        assert (run / folder).is_dir(), folder
    assert sorted(p.name for p in (run / "latents").glob("*.tar")) == sorted(Path(s).name for s in report["shards"])

    index = json.loads((run / "samples" / "index.json").read_text())
    assert [e["prompt"] for e in index] == held_out_prompts()
    for entry in index:
        assert set(entry) == {"file", "prompt"} and (run / "samples" / entry["file"]).stat().st_size > 0
    scores = json.loads((run / "samples" / "scores.json").read_text())
    assert 0.0 <= scores["score"] <= 1.0 and len(scores["samples"]) == len(index)
    assert "score (colour and direction right" in done.stdout and "wandb sync" in done.stdout
    assert list(run.glob("wandb/offline-run-*")), "the demo's own W&B run is missing"


def test_bad_demo_config_fails_naming_the_key():
    with pytest.raises(DemoConfigError, match="clip.frame_stride"):
        load_demo_config(["clip.frame_stride=9"])
    with pytest.raises(DemoConfigError, match="videos.size"):
        load_demo_config(["videos.size=40"])
    with pytest.raises(DemoConfigError, match="steps"):
        load_demo_config(["steps.dti=3"])
