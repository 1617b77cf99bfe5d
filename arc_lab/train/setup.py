"""Setup of a training run, kept apart from the step loop: data, trainable model, reference, stepper.

:func:`prepare` turns (model, tokenizer, objective, examples, :class:`~arc_lab.train.args.StageArgs`,
:class:`~arc_lab.train.args.Runtime`) into a :class:`TrainSetup`:

1. seed python / numpy / torch with ``optim.seed``;
2. tokenise the examples once for ``objective.input_kind`` (:mod:`arc_lab.train.batching`);
3. if ``objective.needs_reference``: precompute reference log-probs from the init model through the
   disk cache (always for full fine-tuning, where the init weights are gone after step 1; for LoRA when
   ``precompute_reference``), or mark the reference as "adapter off", computed every step;
   if ``objective.needs_mismatched``: build the mismatched pairs (:mod:`arc_lab.train.mismatched`) and
   get their reference log-probs the same way;
4. add a fresh LoRA adapter (``lora.enabled``) or make every weight trainable;
5. build the stepper (:mod:`arc_lab.train.stepper`) for ``total_steps`` optimizer steps.

Public API: :class:`TrainSetup`, :func:`prepare`, :func:`total_steps`, :func:`seed_everything`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from arc_lab import dist
from arc_lab.models import cache_root, model_fingerprint
from arc_lab.objectives.base import InputKind, Objective
from arc_lab.train.args import OptimConfig, Runtime, StageArgs
from arc_lab.train.batching import TokenizedDataset, tokenize_examples
from arc_lab.train.forward import use_prefix_sharing
from arc_lab.train.lora import prepare_trainable
from arc_lab.train.mismatched import mismatched_dataset
from arc_lab.train.reference import cached_reference_logps
from arc_lab.train.stepper import Stepper, torch_stepper

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainSetup:
    """What the step loop runs on.

    Attributes:
        stepper: step mechanics; ``stepper.module`` is the model to run forward on.
        dataset: pre-tokenised examples.
        pad_id: padding token id.
        ref_logps: (N, K) precomputed reference log-probs, or None.
        reference: ``cache hit <key>`` | ``cache miss <key>`` | ``adapter_off`` (computed each step) |
            ``none`` (the objective needs none).
        total_steps: optimizer steps of the whole run.
        batches_per_epoch: micro-batches per pass over the data.
        signature: identity of the run, checked when resuming from a checkpoint.
        optim: the optimisation settings.
        world: data-parallel processes (``WORLD_SIZE`` of a DeepSpeed/torchrun launch; 1 otherwise).
        rank: this process's rank; it trains on ``global_micro_batch[rank::world]``.
        shared: batches use the prefix-shared layout (:func:`arc_lab.train.forward.use_prefix_sharing`).
        mismatched: the mismatched pairs, row-aligned with ``dataset`` (objectives that declare
            ``needs_mismatched``), or None.
        mismatched_ref_logps: their precomputed reference log-probs, or None.
    """

    stepper: Stepper
    dataset: TokenizedDataset
    pad_id: int
    ref_logps: torch.Tensor | None
    reference: str
    total_steps: int
    batches_per_epoch: int
    signature: dict[str, Any]
    optim: OptimConfig
    world: int = 1
    rank: int = 0
    shared: bool = False
    mismatched: TokenizedDataset | None = None
    mismatched_ref_logps: torch.Tensor | None = None


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CUDA too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def total_steps(n_examples: int, optim: OptimConfig, world: int = 1) -> tuple[int, int]:
    """(optimizer steps, global micro-batches per epoch): ``max_steps`` or
    ``ceil(epochs * batches / grad_accum)``; a global micro-batch is ``batch_size`` examples per process."""
    per_epoch = math.ceil(n_examples / (optim.batch_size * world))
    if optim.max_steps is not None:
        if optim.max_steps < 1:
            raise ValueError(f"stage.optim.max_steps={optim.max_steps}: expected >= 1 or null")
        return optim.max_steps, per_epoch
    if optim.epochs <= 0:
        raise ValueError(f"stage.optim.epochs={optim.epochs}: expected > 0 (or set max_steps)")
    return max(1, math.ceil(optim.epochs * per_epoch / optim.grad_accum)), per_epoch


def _reference(
    model: nn.Module,
    tokenizer,
    objective: Objective,
    dataset: TokenizedDataset,
    *,
    lora_on: bool,
    precompute: bool,
    cache_dir: Path,
    optim: OptimConfig,
    shared: bool,
) -> tuple[torch.Tensor | None, str]:
    """Precomputed reference log-probs (from the init model, before any adapter) and how they were had."""
    if not objective.needs_reference:
        return None, "none"
    if lora_on and not precompute:
        log.info("reference: the adapter-disabled model, computed every step (precompute_reference=false)")
        return None, "adapter_off"
    if not lora_on and not precompute:
        log.warning(
            "precompute_reference=false but full fine-tuning has no frozen reference to fall back on: "
            "precomputing the reference log-probs from the init weights anyway"
        )
    logps, status = cached_reference_logps(
        model,
        tokenizer,
        dataset,
        model_fp=model_fingerprint(model),
        cache_dir=cache_dir,
        batch_size=optim.batch_size,
        precision=optim.precision,
        shared=shared,
    )
    return logps, f"cache {status}"


def prepare(
    model: nn.Module,
    tokenizer,
    objective: Objective,
    examples,
    args: StageArgs,
    runtime: Runtime | None = None,
) -> TrainSetup:
    """Build everything the step loop needs (see the module docstring for the order).

    Args:
        model: the init model (a plain causal LM), on the device to train on.
        tokenizer: its tokenizer (``pad_token_id`` set, as :func:`arc_lab.models.load_model` does).
        objective: the loss; its ``input_kind`` and ``needs_reference`` decide data and reference.
        examples: see :func:`arc_lab.train.batching.tokenize_examples`.
        args: the stage's settings: ``optim``, ``lora`` (None or ``enabled=False``: full fine-tune),
            ``seq_len`` (max tokens of prompt + answer; block length for PACKED), ``append_eos``,
            ``precompute_reference`` (precompute and cache the reference instead of an adapter-off forward
            every step; always precomputed for full fine-tuning).
        runtime: ``stepper_factory`` (None: plain torch) and ``cache_dir`` (None:
            :func:`arc_lab.models.cache_root`) are read here.
    """
    runtime = runtime or Runtime()
    optim, lora, seq_len = args.optim, args.lora, args.seq_len
    stepper_factory = runtime.stepper_factory or torch_stepper
    cache_dir = runtime.cache_dir
    if optim.precision == "auto":  # a run resolves it while validating; an OptimConfig used directly, here
        from arc_lab.precision import resolve_precision

        optim = dataclasses.replace(optim, precision=resolve_precision(optim.precision))
    seed_everything(optim.seed_value)
    dataset = tokenize_examples(
        tokenizer, examples, objective.input_kind, seq_len=seq_len, append_eos=args.append_eos
    )
    lora_on = lora is not None and lora.enabled
    shared = dataset.kind is not InputKind.PACKED and use_prefix_sharing(
        model, optim.prefix_sharing, seq_len=seq_len
    )
    reference_of = partial(  # the main rows and KTO's mismatched rows: the same pass, another dataset
        _reference,
        model,
        tokenizer,
        objective,
        lora_on=lora_on,
        precompute=args.precompute_reference,
        cache_dir=Path(cache_dir) if cache_dir else cache_root(),
        optim=optim,
        shared=shared,
    )
    ref_logps, reference = reference_of(dataset)
    mismatched, mismatched_ref = None, None
    if objective.needs_mismatched:
        mismatched = mismatched_dataset(dataset)
        mismatched_ref, status = reference_of(mismatched)
        log.info(
            "mismatched pairs (example i's prompt with example i-1's answers): %d examples "
            "(%d prompts re-truncated), reference: %s",
            len(mismatched),
            mismatched.truncated,
            status,
        )
    seed_everything(
        optim.seed_value
    )  # the adapter's init does not depend on whether the reference was computed
    trainable = prepare_trainable(model, lora)
    world, rank = dist.world_size(), dist.rank()
    if world > 1 and stepper_factory is torch_stepper:
        raise ValueError(
            f"WORLD_SIZE={world}: a multi-process launch needs a distributed stepper "
            "(launcher=deepspeed_zero2); the plain-torch stepper would train each process alone"
        )
    steps, per_epoch = total_steps(len(dataset), optim, world)
    stepper = stepper_factory(
        trainable,
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        max_grad_norm=optim.max_grad_norm,
        grad_accum=optim.grad_accum,
        schedule=optim.scheduler,
        warmup_ratio=optim.warmup_ratio,
        total_steps=steps,
    )
    signature = {
        "objective": repr(objective),
        "kind": dataset.kind.value,
        "data": dataset.fingerprint(),
        "n_examples": len(dataset),
        "total_steps": steps,
        "optim": {
            k: v
            for k, v in dataclasses.asdict(optim).items()
            if k
            not in (
                "log_every",
                "save_every",
                "save_every_minutes",
                "prefix_sharing",
            )  # same maths either way
        },
        "lora": dataclasses.asdict(lora) if lora_on and lora is not None else None,
        "reference": reference.split(" ")[0],
    }
    log.info(
        "training %s on %d %s examples (%d truncated), %d optimizer steps, reference: %s",
        type(objective).__name__,
        len(dataset),
        dataset.kind.value,
        dataset.truncated,
        steps,
        reference,
    )
    return TrainSetup(
        stepper=stepper,
        dataset=dataset,
        pad_id=tokenizer.pad_token_id,
        ref_logps=ref_logps,
        reference=reference,
        total_steps=steps,
        batches_per_epoch=per_epoch,
        signature=signature,
        optim=optim,
        world=world,
        rank=rank,
        shared=shared,
        mismatched=mismatched,
        mismatched_ref_logps=mismatched_ref,
    )
