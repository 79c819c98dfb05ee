"""The torchrun line of a SLURM job step: rendezvous from the SLURM environment.

``launch/slurm/train.sbatch`` runs one ``torchrun`` per node (``srun --ntasks-per-node=1``) and
asks this module for its command line:

    python -m allegro_train.parallel.slurm launch/train_dit.py +stage=720p run.dir=/ckpt/720p

which prints the line, shell-quoted, for the script to ``exec``. The rendezvous host is the first
node of the job, expanded from SLURM's compressed host list (``gpu[01-02,05]``) here rather than
with ``scontrol show hostnames``, so the line can be built and tested without SLURM installed.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping

DEFAULT_PORT = 29500
_RANGE = re.compile(r"^(\d+)-(\d+)$")


class SlurmEnvError(KeyError):
    """A SLURM variable the launch line needs is missing or malformed."""


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: ``a[1-2],b`` -> ``["a[1-2]", "b"]``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def expand_hostlist(hostlist: str) -> list[str]:
    """SLURM's compressed host list as names: ``gpu[01-02,05],cpu1`` -> gpu01 gpu02 gpu05 cpu1.

    Zero padding follows the range's first bound (``[08-10]`` -> 08 09 10); several bracket groups
    in one name (``r[1-2]n[1-2]``) expand as their product, in SLURM's order.
    """
    hosts: list[str] = []
    for part in _split_top_level(hostlist):
        match = re.search(r"\[([^\]]+)\]", part)
        if match is None:
            hosts.append(part)
            continue
        head, tail = part[: match.start()], part[match.end():]
        for item in match.group(1).split(","):
            bounds = _RANGE.match(item)
            if bounds is None:
                if not item.isdigit():
                    raise SlurmEnvError(f"cannot parse {item!r} in the host list {hostlist!r}")
                numbers = [item]
            else:
                lo, hi = bounds.groups()
                numbers = [str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1)]
            hosts += [host for n in numbers for host in expand_hostlist(head + n + tail)]
    return hosts


def _first(env: Mapping[str, str], *names: str) -> str:
    for name in names:
        if env.get(name):
            return env[name]
    raise SlurmEnvError(f"none of {', '.join(names)} is set: run inside a SLURM allocation (sbatch/srun)")


def _per_node_count(value: str) -> int:
    """SLURM_NTASKS_PER_NODE / SLURM_GPUS_ON_NODE may read ``4(x2)`` on uniform allocations."""
    return int(value.split("(")[0])


def torchrun_command(env: Mapping[str, str], script: str, args: list[str]) -> list[str]:
    """The ``torchrun`` argv for this node: c10d rendezvous on the job's first host.

    nnodes: SLURM_JOB_NUM_NODES (or SLURM_NNODES); processes per node: SLURM_GPUS_ON_NODE, else
    SLURM_NTASKS_PER_NODE; node rank: SLURM_NODEID; rendezvous id: SLURM_JOB_ID (unique per job,
    kept across a requeue, when every node restarts anyway); port: MASTER_PORT or 29500.
    """
    nodes = int(_first(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES"))
    nproc = _per_node_count(_first(env, "SLURM_GPUS_ON_NODE", "SLURM_NTASKS_PER_NODE"))
    host = expand_hostlist(_first(env, "SLURM_JOB_NODELIST", "SLURM_NODELIST"))[0]
    port = int(env.get("MASTER_PORT") or DEFAULT_PORT)
    return ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={nproc}",
            f"--node_rank={_first(env, 'SLURM_NODEID')}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={host}:{port}", f"--rdzv_id={_first(env, 'SLURM_JOB_ID')}", script, *args]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m allegro_train.parallel.slurm SCRIPT [ARGS...]")
    print(shlex.join(torchrun_command(os.environ, sys.argv[1], sys.argv[2:])))
