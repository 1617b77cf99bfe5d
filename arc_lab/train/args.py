"""The training settings as plain dataclasses (no Hydra, no OmegaConf, no torch), as litgpt's ``args.py``:
optimiser and LoRA (:class:`OptimConfig`, :class:`LoraConfig`), a stage's settings (:class:`StageArgs`)
and what the run lends the loop (:class:`Runtime`).

The training code (:mod:`arc_lab.train.loop`, :mod:`arc_lab.train.setup`, :mod:`arc_lab.train.lora`,
:mod:`arc_lab.run.stage`) imports them from here, so importing the training loop does not import Hydra.
:mod:`arc_lab.config` registers them with Hydra as the ``stage.optim`` and ``stage.lora`` schemas (it does
not redefine them); :mod:`arc_lab.run.build` hands them to the stage. Field comments are the documentation
(``--help`` and DESIGN.md read them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_lab.checks import ConfigError, _check_choice, _check_float, _check_int

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraConfig:
    """A fresh LoRA adapter on a frozen init checkpoint (peft)."""

    #: add a fresh adapter on the frozen init weights; false = full fine-tune (every weight trains)
    enabled: bool = True
    #: adapter rank (the recipe: 64)
    r: int = 64
    #: scaling numerator: the update is (alpha / r) * B @ A (the recipe: 128)
    alpha: int = 128
    #: dropout on the adapter's input during training
    dropout: float = 0.05
    #: module names that get an adapter (the recipe: all 7 projections of every layer)
    target_modules: list[str] = field(default_factory=lambda: list(PROJECTIONS))

    def __post_init__(self) -> None:
        _check_int("stage.lora.r", self.r, 1)
        _check_int("stage.lora.alpha", self.alpha, 1)
        _check_float("stage.lora.dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        if self.enabled and not self.target_modules:
            raise ConfigError("stage.lora.target_modules=[]: a LoRA stage needs at least one module name")


@dataclass
class OptimConfig:
    """Optimisation of the shared loop (AdamW, warm-up + linear/cosine decay)."""

    #: peak learning rate of AdamW (reached after warm-up)
    lr: float = 5e-6
    #: passes over the training examples (fractions allowed; ignored when max_steps is set)
    epochs: float = 1.0
    #: stop after this many optimizer steps (null = run the epochs)
    max_steps: int | None = None
    #: examples per micro-batch (pairs for DPO, blocks for CPT)
    batch_size: int = 8
    #: micro-batches per optimizer step (global batch = batch_size x grad_accum x processes)
    grad_accum: int = 1
    #: fraction of the optimizer steps spent warming the lr up linearly from 0
    warmup_ratio: float = 0.1
    #: lr decay after warm-up: linear (to 0) | cosine (to 0) | constant
    scheduler: str = "linear"
    #: AdamW's decoupled weight decay
    weight_decay: float = 0.0
    #: clip the global grad norm to this (0 = no clipping)
    max_grad_norm: float = 1.0
    #: auto | fp32 | bf16 (bf16 autocast on GPU and CPU alike; weights and optimizer state stay fp32). auto:
    #: bf16 where it is native (CUDA with bf16, CPUs with AVX512-BF16 or AMX), else fp32, logged; the
    #: resolved value is what the stage hash and the run folder record
    precision: str = "auto"
    #: seed of the data order, dropout and the adapter's initialisation; null = the run's ``seed`` (so
    #: ``seed=1`` reaches every stage of a chain, init stages included; 0 for an OptimConfig used outside a
    #: run); a value set here wins
    seed: int | None = None
    #: log the training metrics every N optimizer steps
    log_every: int = 10
    #: checkpoint every N optimizer steps (0 = only at the end)
    save_every: int = 0
    #: also checkpoint when this many minutes passed since the last checkpoint (0 = off); a preempted or
    #: timed-out job then loses at most this much. SIGTERM / SIGUSR2 checkpoint at the next step anyway
    save_every_minutes: float = 0.0
    #: prompt and answers of one question in one packed row, each encoded once (block mask; eager/sdpa
    #: attention only, other kernels fall back with a warning). Same maths as false (one row per answer),
    #: equal to fp32 rounding; the data order (whole questions per batch) does not depend on it
    prefix_sharing: bool = True

    @property
    def seed_value(self) -> int:
        """The seed training uses: ``seed``, or 0 when it is null (a run resolves null to its own seed)."""
        return 0 if self.seed is None else int(self.seed)

    def __post_init__(self) -> None:
        _check_choice("stage.optim.scheduler", self.scheduler, ("linear", "cosine", "constant"))
        _check_choice("stage.optim.precision", self.precision, ("auto", "fp32", "bf16"))
        _check_float("stage.optim.lr", self.lr, low=0.0, low_open=True)
        _check_float("stage.optim.epochs", self.epochs, low=0.0, low_open=True)
        _check_int("stage.optim.max_steps", self.max_steps, 1, null="run the epochs")
        _check_int("stage.optim.batch_size", self.batch_size, 1)
        _check_int("stage.optim.grad_accum", self.grad_accum, 1)
        _check_float("stage.optim.warmup_ratio", self.warmup_ratio, low=0.0, high=1.0)
        _check_float("stage.optim.weight_decay", self.weight_decay, low=0.0)
        _check_float("stage.optim.max_grad_norm", self.max_grad_norm, low=0.0)  # 0 = no clipping
        _check_int("stage.optim.log_every", self.log_every, 1)
        _check_int("stage.optim.save_every", self.save_every, 0)
        _check_float("stage.optim.save_every_minutes", self.save_every_minutes, low=0.0)
        _check_int("stage.optim.seed", self.seed, 0, null="the run's seed")


@dataclass(kw_only=True)
class StageArgs:
    """The settings of one training stage beyond its model, data and loss (``conf/stage``'s fields that
    training reads), as :func:`arc_lab.run.stage.train_stage` takes them; :func:`arc_lab.run.build.stage_args` makes
    them from a run config."""

    #: optimiser, schedule, batch, precision, seed, checkpoint cadence
    optim: OptimConfig
    #: a fresh adapter, or None / ``enabled=False`` for a full fine-tune
    lora: LoraConfig | None = None
    #: max tokens of prompt + answer (block length for packed CPT)
    seq_len: int
    #: append EOS to every answer (the harness never scores it)
    append_eos: bool = False
    #: reference log-probs precomputed once (true) or an adapter-off forward every step (false)
    precompute_reference: bool = True
    #: dtype of the merged checkpoint (float16 in the recipe)
    merge_dtype: str = "float32"
    #: evaluation every N optimizer steps during training (0 = never; the cached end-of-stage one is separate)
    eval_every: int = 0


@dataclass(kw_only=True)
class Runtime:
    """What the run around a stage lends the loop: where metrics go, the mid-training evaluation, how the
    model is stepped, where caches live, how many checkpoints are kept, whether bars show. None of it changes
    the trained weights (none of it is in a stage hash)."""

    #: any object with ``log(metrics: dict, step: int)``; None = :class:`arc_lab.train.loggers.NullLogger`
    logger: Any = None
    #: ``eval_fn(model, step) -> dict`` every ``StageArgs.eval_every`` optimizer steps and after the last
    eval_fn: Callable[[Any, int], dict] | None = None
    #: builds the stepper (:func:`arc_lab.train.stepper.torch_stepper`'s signature; DeepSpeed plugs in
    #: here); None = plain torch
    stepper_factory: Callable[..., Any] | None = None
    #: cache root of the reference log-probs (None = :func:`arc_lab.models.cache_root`)
    cache_dir: str | Path | None = None
    #: newest training checkpoints kept
    keep_checkpoints: int = 2
    #: tqdm bars
    progress: bool = True
