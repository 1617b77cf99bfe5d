"""Preemption: a scheduler's signal becomes a checkpoint at the next step boundary, then a clean exit.

SLURM signals a job before it kills it: SIGTERM on preemption or ``scancel``, and, with submitit,
SIGUSR2 ``signal_delay_s`` before the time limit. :class:`PreemptionGuard` installs handlers for both that
only *record* the signal. The training loop asks :meth:`PreemptionGuard.requested` after every optimizer
step; in a multi-process run the answer is all-reduced, so every rank sees the signal at the same step even
if only some received it, and all ranks write one consistent checkpoint. The loop then saves, and calls
:meth:`PreemptionGuard.chain`: the handler that was installed before ours (submitit's, which requeues the job
through hydra-submitit-launcher's ``checkpoint()`` and exits) gets the signal it would have had. If no
handler of that kind was installed, :class:`Preempted` is raised: the command line prints one line (which
checkpoint was saved, that a rerun resumes from it) and exits with status 3. A rerun -- or submitit's
requeue -- resumes from the checkpoint through the stage cache, redoing no step.

Handlers can only be installed from the main thread; elsewhere (a training call inside a worker thread)
the guard does nothing and says so once in the log.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: The signals a scheduler sends before it kills a job.
SIGNALS = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR2", None)) if s is not None
)


class Preempted(RuntimeError):
    """Training stopped on a scheduler's signal after saving a checkpoint; a rerun resumes from it."""


class PreemptionGuard:
    """Context manager: record SIGTERM / SIGUSR2 while training; restore the old handlers on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._installed = False

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            log.warning(
                "received %s: finishing the current optimizer step, then saving a checkpoint",
                signal.Signals(signum).name,
            )
        self.signum = signum

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is not threading.main_thread():
            log.info("training outside the main thread: scheduler signals are not caught here")
            return self
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._record)
        self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self._installed = False

    def poll(self, world: int = 1, due: bool = False) -> tuple[bool, bool]:
        """``(signalled, due)`` agreed by every rank: whether any rank got a signal, and whether any rank
        found a (time-based) checkpoint ``due``. A collective when ``world > 1``: call it on every rank."""
        flags = [self.signum is not None, due]
        if world > 1:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                t = torch.tensor([int(f) for f in flags], dtype=torch.int32)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                flags = [bool(v) for v in t.tolist()]
                if flags[0] and self.signum is None:
                    self.signum = signal.SIGTERM  # another rank's signal: stop at the same step
        return flags[0], flags[1]

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``), for messages."""
        return signal.Signals(self.signum).name if self.signum is not None else "no signal"

    def chain(self) -> None:
        """Hand the signal to the handler that was installed before ours, if it was a Python callable
        (submitit's requeue); then, if it returned, raise :class:`Preempted` (call after the checkpoint)."""
        previous = self._previous.get(self.signum) if self.signum is not None else None
        self.__exit__()
        if callable(previous):
            log.info("passing %s on to the handler installed before arc_lab's (%r)", self.name, previous)
            previous(self.signum, None)
