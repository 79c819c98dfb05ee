"""Multi-GPU sampling over a Ulysses group, on CPU ranks (gloo): the single process's sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import perturbed
from sample_worker import PROMPT, SAMPLE
from torchrun import check, environment, free_port

from allegro_train.models.dit import AllegroDiT, dit_config
from allegro_train.models.vae import VideoVAE, vae_config
from allegro_train.sampling.command import run_sample
from allegro_train.sampling.config import SampleConfigError, load_sample_config

pytest.importorskip("diffusers")
WORKER = Path(__file__).with_name("sample_worker.py")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_t5: Path) -> Path:
    """The tiny pipeline of tests/sampling (allegro-debug DiT: 2 heads; debug VAE; tiny T5)."""
    from allegro_train.sampling import export_pipeline

    root = tmp_path_factory.mktemp("sp_sampling")
    torch.manual_seed(0)
    perturbed(AllegroDiT(dit_config("allegro-debug")), 1).save_pretrained(root / "transformer")
    perturbed(VideoVAE(vae_config("allegro-vae-debug")), 2).save_pretrained(root / "vae")
    return export_pipeline(root / "transformer", root / "pipeline", vae=root / "vae", text_encoder=tiny_t5)


def sample_args(pipeline: Path, out: Path, *extra: str) -> list[str]:
    return [f"checkpoint={pipeline}", f"prompt={PROMPT}", f"out={out}", "device=cpu", "dtype=fp32", *extra,
            *(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in SAMPLE.items())]


def test_sp2_sample_equals_one_process(pipeline: Path, tmp_path: Path):
    """torchrun, 2 ranks: the split-token latents equal the plain DiT's (fp32, 1e-6 relative) and are
    bitwise the same on both ranks; launch/sample.py's path with sequence_parallel=2 writes, from rank
    0, the single process's uint8 frames (bitwise here; to one level in 0.1 % of values allowed)."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", str(WORKER), str(pipeline), str(tmp_path)],
                          capture_output=True, text=True, env=environment(), timeout=900)
    check(done)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["latents_rel"] <= 1e-6 and not results["ranks_differ"], results

    single = tmp_path / "single.npy"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (OMP_NUM_THREADS=1): other CPU kernels' blocking rounds differently
    try:
        run_sample(load_sample_config(sample_args(pipeline, single)))
    finally:
        torch.set_num_threads(threads)
    split, reference = np.load(tmp_path / "video.npy"), np.load(single)
    assert split.shape == reference.shape == (8, 48, 80, 3) and reference.std() > 5
    # bitwise equal on the dev machine; a BLAS that blocks a 15-row matmul differently from a 30-row
    # one may round differently, which can flip a level where a value sits on a rounding edge
    diff = np.abs(split.astype(int) - reference.astype(int))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 1e-3 * diff.size, (diff.max(), np.count_nonzero(diff))


def test_sequence_parallel_must_match_the_launch(pipeline: Path, tmp_path: Path):
    with pytest.raises(SampleConfigError, match="torchrun --nproc_per_node=2"):
        load_sample_config(sample_args(pipeline, tmp_path / "x.npy", "sequence_parallel=2"))
