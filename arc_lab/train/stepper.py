"""Step mechanics of the shared loop behind one small protocol, so DeepSpeed can plug in.

The loop (:mod:`arc_lab.train.loop`) never touches an optimizer directly. It calls, per optimizer step::

    for _ in range(stepper.grad_accum):
        loss = ...                     # forward on stepper.module, micro-batch *mean* loss
        stepper.backward(loss)         # accumulate; the stepper divides by grad_accum itself
    grad_norm = stepper.step()         # clip, optimizer step, scheduler step, zero the grads

and, for checkpoints, ``stepper.save(directory)`` / ``stepper.load(directory)``.

Protocol :class:`Stepper` (what an implementation must provide):

* ``module: nn.Module`` -- the network the loop runs forward on (for DeepSpeed: ``engine.module``;
  the loop calls its decoder and LM head directly, see :mod:`arc_lab.train.forward`).
* ``grad_accum: int`` -- micro-batches per optimizer step.
* ``backward(loss)`` -- accumulate the gradient of one micro-batch's mean loss, scaled by
  ``1 / grad_accum`` (DeepSpeed's ``engine.backward`` scales by itself; its ``engine.step()`` after every
  micro-batch is a no-op except at the accumulation boundary, so a DeepSpeed stepper may call it here).
* ``step() -> float`` -- at the accumulation boundary: clip to ``max_grad_norm``, optimizer step,
  scheduler step, zero grads. Returns the global grad norm *before* clipping (may be nan/inf).
* ``zero_grad()`` -- drop accumulated gradients without stepping.
* ``lr() -> float`` -- the learning rate the *next* optimizer step will use.
* ``save(directory)`` / ``load(directory)`` -- write / restore everything the stepper owns (trainable
  weights, optimizer and scheduler state) in an existing directory. The loop's own state (RNG, data
  position, step count, metrics history) is written next to it by :mod:`arc_lab.train.checkpoint`,
  which also makes the whole directory appear atomically.

A factory with the signature of :func:`torch_stepper` builds a stepper; :func:`arc_lab.train.loop.train`
takes one as ``stepper_factory`` (default :func:`torch_stepper`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from arc_lab.run.runinfo import save_torch

SCHEDULES = ("linear", "cosine", "constant")


@runtime_checkable
class Stepper(Protocol):
    """What the loop needs from the step mechanics (see the module docstring)."""

    module: nn.Module
    grad_accum: int

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> float: ...

    def zero_grad(self) -> None: ...

    def lr(self) -> float: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """``ceil(warmup_ratio * total_steps)``, as transformers' ``TrainingArguments`` counts it."""
    return math.ceil(warmup_ratio * total_steps)


def lr_lambda(schedule: str, total_steps: int, warmup_ratio: float):
    """Multiplier of the peak lr after ``step`` optimizer steps: linear warm-up, then decay.

    Same curves as transformers' ``get_{linear,cosine,constant}_schedule_with_warmup`` (so runs compare
    with TRL): warm-up ``step / warm`` (the first step of a warm-up runs at lr 0), then ``linear`` decays
    to 0 at ``total_steps``, ``cosine`` follows half a cosine to 0, ``constant`` stays 1.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: expected one of {list(SCHEDULES)}")
    warm = warmup_steps(total_steps, warmup_ratio)

    def fn(step: int) -> float:
        if step < warm:
            return step / warm
        if schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


class TorchStepper:
    """Plain-torch :class:`Stepper`: AdamW, LambdaLR warm-up + decay, grad-norm clipping.

    Weight decay applies to matrices only (no decay for 1-D params: biases and norm weights), as in
    transformers' Trainer. Only parameters with ``requires_grad`` are optimised and checkpointed, so a
    LoRA checkpoint holds the adapter only and a full fine-tune holds every weight.

    Args:
        module: the model (a peft model for LoRA); its trainable parameters are optimised.
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        max_grad_norm: clip threshold of the global L2 grad norm (<= 0 disables clipping).
        grad_accum: micro-batches per optimizer step.
        schedule: ``linear`` | ``cosine`` | ``constant``.
        warmup_ratio: fraction of ``total_steps`` spent warming up.
        total_steps: optimizer steps of the whole run.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        lr: float,
        weight_decay: float,
        max_grad_norm: float,
        grad_accum: int,
        schedule: str,
        warmup_ratio: float,
        total_steps: int,
    ) -> None:
        self.module = module
        self.grad_accum = grad_accum
        self.max_grad_norm = max_grad_norm
        self.params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        if not self.params:
            raise ValueError(
                "TorchStepper: the model has no trainable parameters (requires_grad is False everywhere)"
            )
        decay = [p for p in self.params.values() if p.dim() >= 2]
        no_decay = [p for p in self.params.values() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(schedule, total_steps, warmup_ratio)
        )

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate ``loss / grad_accum``'s gradient (``loss``: scalar micro-batch mean)."""
        (loss / self.grad_accum).backward()

    def step(self) -> float:
        """Clip, step optimizer and scheduler, zero grads; return the pre-clip grad norm."""
        params = list(self.params.values())
        if self.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        self.optimizer.step()
        self.scheduler.step()
        self.zero_grad()
        return float(norm)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def save(self, directory: Path) -> None:
        """Write ``trainable.pt`` (name -> tensor), ``optimizer.pt`` and ``scheduler.pt``."""
        directory = Path(directory)
        save_torch({n: p.detach().cpu().clone() for n, p in self.params.items()}, directory / "trainable.pt")
        save_torch(self.optimizer.state_dict(), directory / "optimizer.pt")
        save_torch(self.scheduler.state_dict(), directory / "scheduler.pt")

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote; the trainable parameter names must match exactly."""
        directory = Path(directory)
        weights = torch.load(directory / "trainable.pt", map_location="cpu", weights_only=True)
        if set(weights) != set(self.params):
            missing, extra = set(self.params) - set(weights), set(weights) - set(self.params)
            raise ValueError(
                f"checkpoint {directory}: trainable parameters differ from the model's "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]})"
            )
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(weights[n])
        self.optimizer.load_state_dict(
            torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
        )
        self.scheduler.load_state_dict(
            torch.load(directory / "scheduler.pt", map_location="cpu", weights_only=True)
        )


def torch_stepper(
    module: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    max_grad_norm: float,
    grad_accum: int,
    schedule: str,
    warmup_ratio: float,
    total_steps: int,
) -> TorchStepper:
    """Default stepper factory (the signature a DeepSpeed factory must share)."""
    return TorchStepper(
        module,
        lr=lr,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        grad_accum=grad_accum,
        schedule=schedule,
        warmup_ratio=warmup_ratio,
        total_steps=total_steps,
    )
