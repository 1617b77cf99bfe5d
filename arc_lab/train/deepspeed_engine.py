"""DeepSpeed (ZeRO-2) behind the loop's :class:`~arc_lab.train.stepper.Stepper` protocol.

The loop keeps its forward (decoder + LM head at answer positions, on ``stepper.module``); the DeepSpeed
engine owns everything after the loss: loss scaling by the accumulation steps, gradient reduction and
partitioning across ranks (ZeRO-2: optimizer states and gradients sharded, weights replicated),
clipping, the optimizer and scheduler steps, and checkpoints (``engine.save_checkpoint`` /
``engine.load_checkpoint``: per-rank optimizer shards, trainable weights only).

The optimizer is a ``torch.optim.AdamW`` *object* (same parameter groups as the plain-torch stepper:
no decay on 1-D params) and the scheduler a ``LambdaLR`` with the loop's warm-up curve, both handed to
``deepspeed.initialize``. A DeepSpeed-named optimizer (``"optimizer": {"type": "AdamW"}``) would compile
a fused op on first use and change the update rule, so a config that names one is refused.

Config: ``stage.deepspeed`` is a DeepSpeed config dict (``launcher=deepspeed_zero2`` sets the ZeRO-2
preset, ``conf/launcher/deepspeed_zero2.yaml``). Values ``"auto"`` are filled from ``stage.optim``
(:func:`resolve_config`); an explicit value that contradicts ``stage.optim`` is an error.

Launching (4 GPUs, one node). Hydra rejects the ``--local_rank`` argument plain ``deepspeed`` appends, so
use ``--no_local_rank`` (ranks read ``LOCAL_RANK`` from the environment), and give every rank the same
run folder (``hydra.run.dir``; otherwise each rank's ``${now:...}`` may differ by a second)::

    deepspeed --no_local_rank --num_gpus 4 --module arc_lab \\
        experiment=<name> launcher=deepspeed_zero2 hydra.run.dir=outputs/runs/<name>

    torchrun --standalone --nproc_per_node=4 -m arc_lab \\
        experiment=<name> launcher=deepspeed_zero2 hydra.run.dir=outputs/runs/<name>

Both set ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; a plain
``python -m arc_lab ... launcher=deepspeed_zero2`` runs one process (:func:`ensure_distributed_env`
fills those variables, with a free port). The global batch is
``batch_size x grad_accum x world_size``. On CPU DeepSpeed uses the gloo backend and compiles a small
shared-memory comm op once (~30 s, cached in ``$TORCH_EXTENSIONS_DIR``, default
``$ARC_LAB_CACHE/torch_extensions``); bf16 works there, fp16 does not.

Public API: :func:`resolve_config`, :func:`load_config`, :func:`ensure_distributed_env`,
:class:`DeepSpeedStepper`, :func:`deepspeed_stepper_factory`, :func:`make_stepper_factory`.
Ranks and barriers: :mod:`arc_lab.dist`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arc_lab import dist
from arc_lab.train.stepper import lr_lambda, torch_stepper

log = logging.getLogger(__name__)

AUTO = "auto"
#: the checkpoint tag inside a stepper directory (``<dir>/deepspeed/...``)
TAG = "deepspeed"
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DeepSpeedConfigError(ValueError):
    """``stage.deepspeed`` contradicts ``stage.optim`` or asks for something this stepper replaces."""


# ------------------------------------------------------------------------------------------ config
def load_config(spec: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A DeepSpeed config as a plain dict: a mapping (``stage.deepspeed`` of the validated run config) or
    the path of a JSON file."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"stage.deepspeed={str(spec)!r}: no such DeepSpeed JSON config")
        return json.loads(path.read_text())
    return copy.deepcopy(dict(spec))


def _fill(cfg: dict[str, Any], key: str, value: Any, source: str, where: str = "stage.deepspeed") -> None:
    """Set ``cfg[key]`` when it is missing or ``auto``; refuse an explicit value that differs."""
    have = cfg.get(key, AUTO)
    if have == AUTO:
        cfg[key] = value
    elif have != value:
        raise DeepSpeedConfigError(
            f"{where}.{key}={have!r} contradicts {source}={value!r}: set it to 'auto' (filled from "
            f"{source}) or change {source}"
        )


def resolve_config(
    ds_config: Mapping[str, Any] | str | Path,
    *,
    micro_batch_size: int,
    grad_accum: int,
    max_grad_norm: float,
    precision: str,
    world_size: int = 1,
) -> dict[str, Any]:
    """Fill the ``auto`` values of a DeepSpeed config from the loop's optimisation settings.

    Args:
        ds_config: DeepSpeed config (mapping or JSON path), e.g. the ZeRO-2 preset.
        micro_batch_size: examples per micro-batch per rank (``stage.optim.batch_size``).
        grad_accum: micro-batches per optimizer step (``stage.optim.grad_accum``).
        max_grad_norm: clip threshold (``stage.optim.max_grad_norm``; <= 0 disables clipping).
        precision: ``fp32`` | ``bf16`` (``stage.optim.precision``): bf16 turns on DeepSpeed's bf16 mode.
        world_size: number of ranks (``train_batch_size`` = micro x accum x world).

    Returns:
        A new dict that ``deepspeed.initialize`` accepts.

    Raises:
        DeepSpeedConfigError: an explicit value disagrees with ``stage.optim``, or the config names an
            optimizer / scheduler (this stepper passes its own), or asks for fp16.
    """
    cfg = load_config(ds_config)
    for key in ("optimizer", "scheduler"):
        if key in cfg:
            raise DeepSpeedConfigError(
                f"stage.deepspeed.{key} is set: the DeepSpeed stepper passes a torch.optim.AdamW object and a "
                f"LambdaLR built from stage.optim (a named DeepSpeed optimizer compiles a fused op and "
                f"changes the update rule). Remove stage.deepspeed.{key}."
            )
    if precision not in ("fp32", "bf16"):
        raise DeepSpeedConfigError(f"stage.optim.precision={precision!r}: expected fp32 | bf16")
    if cfg.get("fp16", {}).get("enabled") not in (None, False, AUTO):
        raise DeepSpeedConfigError(
            "stage.deepspeed.fp16.enabled: fp16 is not supported by the loop "
            "(stage.optim.precision is fp32 | bf16); use bf16"
        )
    cfg.setdefault("fp16", {})["enabled"] = False
    _fill(cfg, "train_micro_batch_size_per_gpu", micro_batch_size, "stage.optim.batch_size")
    _fill(cfg, "gradient_accumulation_steps", grad_accum, "stage.optim.grad_accum")
    _fill(
        cfg,
        "train_batch_size",
        micro_batch_size * grad_accum * world_size,
        f"stage.optim.batch_size x grad_accum x world_size({world_size})",
    )
    _fill(cfg, "gradient_clipping", max(float(max_grad_norm), 0.0), "stage.optim.max_grad_norm")
    _fill(
        cfg.setdefault("bf16", {}),
        "enabled",
        precision == "bf16",
        "stage.optim.precision=='bf16'",
        where="stage.deepspeed.bf16",
    )
    return cfg


# ------------------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_distributed_env() -> bool:
    """Make a launcher-less process a world of one (else ``deepspeed.initialize`` looks for mpi4py).

    Sets ``RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=<free port>`` when none of
    them is set. Also points ``TORCH_EXTENSIONS_DIR`` at ``$ARC_LAB_CACHE/torch_extensions`` when unset,
    so the comm op DeepSpeed compiles once is cached with arc_lab's other caches.

    Returns:
        True when it filled the variables (single process), False when a launcher had set them.

    Raises:
        RuntimeError: only some of the variables are set (a half-configured launcher).
    """
    from arc_lab.models import cache_root

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root() / "torch_extensions"))
    ranks = [v for v in ("RANK", "LOCAL_RANK", "WORLD_SIZE") if v in os.environ]
    if len(ranks) == 3:
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise RuntimeError(
                "RANK/LOCAL_RANK/WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not: "
                "launch with torchrun/deepspeed, or unset them all for a single process"
            )
        return False
    if ranks:
        raise RuntimeError(
            f"distributed environment half set: only {ranks} of RANK, LOCAL_RANK, WORLD_SIZE. "
            "Launch with torchrun/deepspeed, or unset them all for a single process."
        )
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    log.info("no launcher: running DeepSpeed as a single process (MASTER_PORT=%s)", os.environ["MASTER_PORT"])
    return True


# --------------------------------------------------------------------------------------- stepper
class DeepSpeedStepper:
    """:class:`~arc_lab.train.stepper.Stepper` around a DeepSpeed engine.

    Accumulation: before each micro-batch's ``engine.backward`` the stepper tells the engine whether it
    is the last of the optimizer step (``set_gradient_accumulation_boundary``), so ZeRO-2 reduces the
    gradients across ranks once, on the boundary, and :meth:`step` is the only ``engine.step()`` call.
    ``engine.backward`` scales the loss by ``1 / grad_accum`` itself.

    Args:
        module: the model (a peft model for LoRA); only parameters with ``requires_grad`` are optimised.
        ds_config: a *resolved* DeepSpeed config (see :func:`resolve_config`).
        lr, weight_decay, max_grad_norm, grad_accum, schedule, warmup_ratio, total_steps: as for
            :class:`~arc_lab.train.stepper.TorchStepper`. ``grad_accum`` and ``max_grad_norm`` must
            match ``ds_config``.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        ds_config: Mapping[str, Any],
        lr: float,
        weight_decay: float,
        max_grad_norm: float,
        grad_accum: int,
        schedule: str,
        warmup_ratio: float,
        total_steps: int,
    ) -> None:
        import deepspeed

        if ds_config.get("gradient_accumulation_steps") != grad_accum:
            raise DeepSpeedConfigError(
                f"ds_config gradient_accumulation_steps="
                f"{ds_config.get('gradient_accumulation_steps')!r} != grad_accum={grad_accum}; "
                "pass a config from resolve_config()"
            )
        self.grad_accum = grad_accum
        self.trainable = [n for n, p in module.named_parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("DeepSpeedStepper: the model has no trainable parameters")
        params = [p for p in module.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(schedule, total_steps, warmup_ratio)
        )
        ensure_distributed_env()
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=scheduler, config=dict(ds_config)
        )
        self.module = self.engine.module
        self._micro = 0

    @property
    def device(self) -> torch.device:
        """Where the engine put the model (``cuda:<local_rank>`` on GPU, ``cpu`` otherwise)."""
        return self.engine.device

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate one micro-batch's mean loss (DeepSpeed scales it by ``1 / grad_accum``)."""
        if self._micro >= self.grad_accum:
            raise RuntimeError(
                f"backward called {self._micro + 1} times without step() (grad_accum={self.grad_accum})"
            )
        self.engine.set_gradient_accumulation_boundary(self._micro + 1 == self.grad_accum)
        self.engine.backward(loss)
        self._micro += 1

    def step(self) -> float:
        """Optimizer step at the accumulation boundary; returns the pre-clip global grad norm."""
        if self._micro != self.grad_accum:
            raise RuntimeError(
                f"step() after {self._micro} of {self.grad_accum} micro-batches: the loop must "
                "call backward() grad_accum times per optimizer step under DeepSpeed"
            )
        self.engine.set_gradient_accumulation_boundary(True)
        self.engine.step()
        self._micro = 0
        norm = self.engine.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    def zero_grad(self) -> None:
        """Drop gradients. Only between optimizer steps: ZeRO-2 has already reduced a boundary
        micro-batch's gradients into its partitions, so a half-done accumulation cannot be discarded."""
        if self._micro:
            raise RuntimeError(
                f"zero_grad() after {self._micro} of {self.grad_accum} micro-batches is not "
                "supported under DeepSpeed ZeRO; finish the optimizer step"
            )
        self.engine.zero_grad()

    def lr(self) -> float:
        """Learning rate of the next optimizer step."""
        return float(self.engine.get_lr()[0])

    def _same_dir_on_all_ranks(self, directory: Path) -> None:
        if dist.world_size() == 1:
            return
        dirs: list[Any] = [None] * dist.world_size()
        torch.distributed.all_gather_object(dirs, str(Path(directory).resolve()))
        if len(set(dirs)) != 1:
            raise RuntimeError(
                f"DeepSpeed checkpoints need the same directory on every rank, got {dirs}: the "
                "per-rank optimizer shards are written side by side"
            )

    def save(self, directory: Path) -> None:
        """Collective: every rank writes its ZeRO shard under ``<directory>/deepspeed/`` (trainable
        weights, fp32 optimizer partitions, scheduler); the trainable names go along for :meth:`load`."""
        self._same_dir_on_all_ranks(directory)
        self.engine.save_checkpoint(
            str(directory),
            tag=TAG,
            client_state={"trainable": self.trainable},
            exclude_frozen_parameters=True,
        )

    def load(self, directory: Path) -> None:
        """Collective inverse of :meth:`save` (same world size: ZeRO shards are per rank).

        Raises:
            FileNotFoundError: no DeepSpeed checkpoint in ``directory``.
            ValueError: the checkpoint's trainable parameters differ from the model's.
        """
        self._same_dir_on_all_ranks(directory)
        if not (Path(directory) / TAG).is_dir():
            raise FileNotFoundError(
                f"{directory}: no DeepSpeed checkpoint ({TAG}/ missing); was it written "
                "by the plain-torch stepper?"
            )
        # strict=False because frozen weights are not in the file; the names are checked below instead
        path, client = self.engine.load_checkpoint(str(directory), tag=TAG, load_module_strict=False)
        if path is None:
            raise FileNotFoundError(f"{directory}: DeepSpeed could not load the checkpoint tag {TAG!r}")
        saved = client.get("trainable") if client else None
        if saved != self.trainable:
            missing, extra = set(self.trainable) - set(saved or []), set(saved or []) - set(self.trainable)
            raise ValueError(
                f"checkpoint {directory}: trainable parameters differ from the model's "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]})"
            )
        self._micro = 0


# -------------------------------------------------------------------------------------- factories
def deepspeed_stepper_factory(
    ds_config: Mapping[str, Any] | str | Path, *, micro_batch_size: int, precision: str
) -> Callable[..., DeepSpeedStepper]:
    """A stepper factory with :func:`~arc_lab.train.stepper.torch_stepper`'s signature.

    Args:
        ds_config: ``stage.deepspeed`` (mapping or JSON path), ``auto`` values allowed.
        micro_batch_size: ``stage.optim.batch_size``.
        precision: ``stage.optim.precision``.
    """

    def factory(
        module: nn.Module,
        *,
        lr: float,
        weight_decay: float,
        max_grad_norm: float,
        grad_accum: int,
        schedule: str,
        warmup_ratio: float,
        total_steps: int,
    ) -> DeepSpeedStepper:
        ensure_distributed_env()
        cfg = resolve_config(
            ds_config,
            micro_batch_size=micro_batch_size,
            grad_accum=grad_accum,
            max_grad_norm=max_grad_norm,
            precision=precision,
            world_size=int(os.environ["WORLD_SIZE"]),
        )
        return DeepSpeedStepper(
            module,
            ds_config=cfg,
            lr=lr,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            grad_accum=grad_accum,
            schedule=schedule,
            warmup_ratio=warmup_ratio,
            total_steps=total_steps,
        )

    return factory


def make_stepper_factory(
    deepspeed: Mapping[str, Any] | str | None, *, micro_batch_size: int, precision: str
) -> Callable[..., Any]:
    """``stage.deepspeed`` -> the loop's stepper factory: plain torch when None, DeepSpeed otherwise."""
    if deepspeed is None:
        return torch_stepper
    return deepspeed_stepper_factory(deepspeed, micro_batch_size=micro_batch_size, precision=precision)
