"""The torchrun line built from a SLURM environment, and SLURM host-list expansion."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from allegro_train.parallel.slurm import SlurmEnvError, expand_hostlist, torchrun_command

REPO = Path(__file__).resolve().parents[2]
TWO_BY_TWO = {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODEID": "1",
              "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"}


def test_two_nodes_two_tasks():
    cmd = torchrun_command(TWO_BY_TWO, "launch/train_dit.py", ["+stage=demo", "run.dir=/ckpt/x"])
    assert cmd == ["torchrun", "--nnodes=2", "--nproc_per_node=2", "--node_rank=1", "--rdzv_backend=c10d",
                   "--rdzv_endpoint=gpu07:29500", "--rdzv_id=4242", "launch/train_dit.py", "+stage=demo",
                   "run.dir=/ckpt/x"]


def test_gpus_on_node_and_fallback_names():
    env = {"SLURM_NNODES": "4", "SLURM_GPUS_ON_NODE": "8", "SLURM_NTASKS_PER_NODE": "1(x4)", "SLURM_NODEID": "0",
           "SLURM_NODELIST": "node-a,node-b", "SLURM_JOB_ID": "7", "MASTER_PORT": "12345"}
    cmd = torchrun_command(env, "train.py", [])
    assert "--nnodes=4" in cmd and "--nproc_per_node=8" in cmd and "--rdzv_endpoint=node-a:12345" in cmd


def test_missing_variable_is_named():
    env = dict(TWO_BY_TWO)
    del env["SLURM_JOB_ID"]
    with pytest.raises(SlurmEnvError, match="SLURM_JOB_ID"):
        torchrun_command(env, "train.py", [])


@pytest.mark.parametrize("hostlist, hosts", [
    ("gpu01", ["gpu01"]),
    ("gpu[01-02,05]", ["gpu01", "gpu02", "gpu05"]),
    ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
    ("a[1-2],b7,c[3]", ["a1", "a2", "b7", "c3"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("node-[1-2]-ib", ["node-1-ib", "node-2-ib"]),
])
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_expand_hostlist_rejects_garbage():
    with pytest.raises(SlurmEnvError, match="x-y"):
        expand_hostlist("gpu[x-y]")


def test_module_prints_a_shell_line():
    """What train.sbatch evaluates on each node."""
    env = {**os.environ, **TWO_BY_TWO, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "allegro_train.parallel.slurm", "launch/train_dit.py",
                          "data.shards=['/d/{0..9}.tar']"], env=env, capture_output=True, text=True, check=True)
    expected = torchrun_command(TWO_BY_TWO, "launch/train_dit.py", ["data.shards=['/d/{0..9}.tar']"])
    assert shlex.split(out.stdout) == expected
