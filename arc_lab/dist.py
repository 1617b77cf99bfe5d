"""Process rank, world size and barriers of a data-parallel (DeepSpeed/torchrun) launch.

Before ``torch.distributed`` is initialised the launcher's environment (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``) is the answer; afterwards the process group is. Outside a distributed launch every
function answers as a single process (rank 0 of 1) and :func:`barrier` does nothing.
"""

from __future__ import annotations

import os


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
