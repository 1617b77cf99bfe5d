"""Process rank, world size and barriers of a data-parallel (DeepSpeed/torchrun/SLURM) launch.

Before ``torch.distributed`` is initialised the launcher's environment (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``) is the answer; afterwards the process group is. Outside a distributed launch every
function answers as a single process (rank 0 of 1) and :func:`barrier` does nothing.

A job started by a scheduler with several tasks (``hydra/launcher=slurm_gpu
hydra.launcher.tasks_per_node=4``, or submitit's local executor) has no torchrun to set those variables:
:func:`scheduler_env` derives them from the scheduler's own (``SLURM_PROCID``, ``SLURM_LOCALID``,
``SLURM_NTASKS``, the first host of ``SLURM_JOB_NODELIST``; submitit's ``SUBMITIT_LOCAL_*``), with a port
derived from the job id, so every task of the job finds the same rendezvous.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

#: Rendezvous ports are taken from [PORT_BASE, PORT_BASE + PORT_SPAN), by job id: the same for every task of
#: a job, different for jobs sharing a node, below the usual ephemeral range (32768+).
PORT_BASE, PORT_SPAN = 20000, 10000


def initialized() -> bool:
    """Whether a ``torch.distributed`` process group is running (torch is imported only if it already is)."""
    import sys

    if "torch" not in sys.modules:
        return False
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """Global rank: the process group's, else ``RANK`` as set by the launcher, else 0."""
    if initialized():
        import torch

        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK``, else 0): the GPU a rank uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Number of ranks: the process group's, else ``WORLD_SIZE``, else 1."""
    if initialized():
        import torch

        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0 of one."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if initialized():
        import torch

        torch.distributed.barrier()


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list, expanded: ``gpu[01-03,07],login5`` -> gpu01, gpu02, gpu03, gpu07, login5."""
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist):
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(prefix + lo)
                continue
            hosts += [f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1)]
    return hosts


def job_port(job_id: str) -> int:
    """The rendezvous port of a job: deterministic in its id (digits only: ``1234_5`` -> 12345)."""
    digits = re.sub(r"\D", "", job_id) or "0"
    return PORT_BASE + int(digits) % PORT_SPAN


def scheduler_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` for a task of a multi-task
    scheduler job; {} when a launcher already set ``RANK`` or the job has one task."""
    env = os.environ if environ is None else environ
    if "RANK" in env:
        return {}
    if "SUBMITIT_LOCAL_JOB_ID" in env:  # submitit's local executor: every task on this machine
        n = int(env.get("SUBMITIT_LOCAL_NTASKS", "1"))
        if n <= 1:
            return {}
        return {
            "RANK": env["SUBMITIT_LOCAL_GLOBALID"],
            "LOCAL_RANK": env["SUBMITIT_LOCAL_LOCALID"],
            "WORLD_SIZE": str(n),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(job_port(env["SUBMITIT_LOCAL_JOB_ID"])),
        }
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        nodes = expand_nodelist(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1")
        return {
            "RANK": env["SLURM_PROCID"],
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "WORLD_SIZE": env["SLURM_NTASKS"],
            "MASTER_ADDR": nodes[0],
            "MASTER_PORT": str(job_port(env.get("SLURM_JOB_ID", "0"))),
        }
    return {}
