"""The one training loop shared by every stage and objective.

Public API::

    train(model, tokenizer, objective, examples, args: StageArgs, *, out_dir, runtime: Runtime = None)
        -> TrainResult
    run_loop(setup: TrainSetup, objective, *, out_dir, eval_every=0, runtime: Runtime = None) -> TrainResult
    TrainResult, TrainingDiverged, NullLogger

``train`` = :func:`arc_lab.train.setup.prepare` (data, LoRA / full fine-tune, reference, stepper) +
:func:`run_loop`. Per optimizer step the loop takes ``grad_accum`` micro-batches of ``batch_size``
examples from a seeded stream (epoch ``e`` visits the questions in ``randperm(n_questions, seed * 1_000_003
+ e)`` order, a micro-batch holds whole questions, see :func:`~arc_lab.train.batching.epoch_batches`),
runs one forward per micro-batch (prefix-shared: each prompt and distinct answer once; LM head at answer
positions only), attaches reference log-probs when the objective
``needs_reference`` (precomputed rows, or the adapter-off model), the mismatched pairs' log-probs when it
``needs_mismatched`` (:mod:`arc_lab.train.mismatched`), and calls the objective.

* Logging every ``optim.log_every`` steps: ``loss``, ``lr``, ``grad_norm``, the objective's metrics (means
  over the window), ``tokens_per_s``, ``epoch``; sent to ``logger.log(metrics, step)`` (any object with
  that method; :class:`~arc_lab.train.loggers.NullLogger` by default) and kept in ``TrainResult.history``.
* ``eval_fn(model, step) -> dict`` every ``eval_every`` steps and after the last step (model in eval mode).
* Checkpoints every ``optim.save_every`` steps and at the end (:mod:`arc_lab.train.checkpoint`);
  calling ``train`` again with the same ``out_dir`` resumes from the newest one -- bitwise identical to
  an uninterrupted run on CPU fp32 -- and returns at once if the run had finished.
* A non-finite loss or grad norm raises :class:`TrainingDiverged`; the broken state is not saved. Before
  every checkpoint save and at the end, :func:`arc_lab.train.health.check_model` checks the weights the
  last update produced (finite, finite logits, output not collapsed): a failure raises
  :class:`TrainingDiverged` (or :class:`~arc_lab.train.health.ModelCollapsed`) and nothing is saved.
* Running out of disk space while writing (checkpoint, ``metrics.jsonl``) raises
  :class:`arc_lab.run.runinfo.DiskFull` naming the file and the last good checkpoint, which a rerun resumes from.
* Precision: ``fp32``, or ``bf16`` = bf16 autocast around the forward (CUDA and CPU alike) with fp32
  master weights and optimizer state (a model loaded in bf16 trains bf16 weights instead).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from arc_lab.objectives.base import Objective
from arc_lab.run.runinfo import disk_full_guard
from arc_lab.train.args import Runtime, StageArgs
from arc_lab.train.batching import TokenizedDataset, collate, epoch_batches
from arc_lab.train.checkpoint import (
    LoopState,
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from arc_lab.train.forward import answer_logps
from arc_lab.train.health import TrainingDiverged, check_model
from arc_lab.train.loggers import NullLogger
from arc_lab.train.lora import reference_mode
from arc_lab.train.mismatched import mismatched_logps
from arc_lab.train.preempt import Preempted, PreemptionGuard
from arc_lab.train.setup import TrainSetup, prepare
from arc_lab.train.stepper import Stepper

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: the trained model (a peft model for LoRA: pass it to :func:`arc_lab.train.merge.merge`).
        steps: optimizer steps done (== the planned total).
        history: logged metrics, one dict per logging step (with ``step``), eval results included.
        checkpoint: the final checkpoint directory.
        resumed_from: step of the checkpoint this call resumed from, or None.
        reference: how reference log-probs were had (see :class:`arc_lab.train.setup.TrainSetup`).
        truncated: examples whose prompt was left-truncated to fit ``seq_len``.
        tokens_seen: real tokens consumed by the whole run.
        wall_s: seconds spent in this call's loop.
    """

    model: nn.Module
    steps: int
    history: list[dict[str, float]]
    checkpoint: Path | None
    resumed_from: int | None
    reference: str
    truncated: int
    tokens_seen: int
    wall_s: float
    last: dict[str, float] = field(default_factory=dict)


def _stream(
    dataset: TokenizedDataset, batch_size: int, seed: int, state: LoopState, world: int = 1, rank: int = 0
) -> Iterator[list[int]]:
    """This process's micro-batches of example indices from ``state``'s position on, advancing ``state``.

    One process: :func:`~arc_lab.train.batching.epoch_batches` (whole questions per batch, questions in
    ``randperm`` order). Data-parallel: every process draws the same global micro-batch of
    ``batch_size * world`` indices of ``randperm(n)`` and keeps ``[rank::world]``; a short last global
    batch is topped up from the start of the epoch's order so that every process gets ``batch_size``.
    """
    n, size = len(dataset), batch_size * world
    while True:
        seed_e = seed * 1_000_003 + state.epoch
        if world == 1:
            batches = epoch_batches(dataset, batch_size, seed_e)
            while state.batch_in_epoch < len(batches):
                state.batch_in_epoch += 1
                yield batches[state.batch_in_epoch - 1]
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed_e)).tolist()
            while state.batch_in_epoch * size < n:
                start = state.batch_in_epoch * size
                state.batch_in_epoch += 1
                batch = order[start : start + size]
                if len(batch) < size:
                    batch += (order * size)[: size - len(batch)]
                yield batch[rank::world]
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0


def _micro_step(
    setup: TrainSetup, objective: Objective, indices: list[int]
) -> tuple[torch.Tensor, dict, int]:
    """Forward + objective of one micro-batch: (loss, metrics, real tokens)."""
    model = setup.stepper.module
    device = next(model.parameters()).device
    batch = collate(setup.dataset, indices, setup.pad_id, shared=setup.shared).to(device)
    out = answer_logps(model, batch, precision=setup.optim.precision)
    if objective.needs_reference:
        if setup.ref_logps is not None:
            out.ref_logps = setup.ref_logps[batch.index.cpu(), : out.logps.shape[1]].to(device)
        else:
            with torch.no_grad(), reference_mode(model):
                out.ref_logps = answer_logps(model, batch, precision=setup.optim.precision).logps
    if objective.needs_mismatched:
        out.mismatched = mismatched_logps(setup, batch.index, objective.needs_reference)
    loss, metrics = objective(out)
    return loss, metrics, batch.n_tokens


def _advice(out_dir: Path, lr: float) -> str:
    """What a divergence message says was kept and what to try."""
    last = latest_checkpoint(out_dir)
    return (
        f"The broken state was not saved; last good checkpoint: {last or 'none'}. Try a lower "
        f"stage.optim.lr (now {lr:g}), a smaller max_grad_norm, fp32, or check the data (empty or "
        f"extreme-length answers)."
    )


def _diverged(what: str, value: float, state: LoopState, lr: float, out_dir: Path) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged at step {state.step + 1}: {what} = {value}. {_advice(out_dir, lr)}"
    )


def _last_checkpoint_note(out_dir: Path) -> str:
    last = latest_checkpoint(out_dir)
    if last is None:
        return "no training checkpoint yet (a rerun starts this stage's training over)"
    return f"the last good checkpoint {last} (a rerun of the same command resumes from it)"


def _optimizer_step(
    setup: TrainSetup,
    objective: Objective,
    stream: Iterator[list[int]],
    state: LoopState,
    window: dict[str, float],
    out_dir: Path,
) -> None:
    """``grad_accum`` micro-batches, then one optimizer step; sums into ``window``, advances ``state``."""
    stepper = setup.stepper
    lr, tokens = stepper.lr(), 0
    for _ in range(stepper.grad_accum):
        loss, metrics, n_tok = _micro_step(setup, objective, next(stream))
        if not torch.isfinite(loss):
            raise _diverged("loss", float(loss.detach()), state, lr, out_dir)
        stepper.backward(loss)
        window["loss"] += float(loss.detach()) / stepper.grad_accum
        for k, v in metrics.items():
            window[k] += float(v.detach() if isinstance(v, torch.Tensor) else v) / stepper.grad_accum
        tokens += n_tok
    grad_norm = stepper.step()
    if not math.isfinite(grad_norm):
        raise _diverged("grad norm", grad_norm, state, lr, out_dir)
    state.step += 1
    state.tokens_seen += tokens
    for k, v in (("_tokens", tokens), ("_n", 1), ("grad_norm", grad_norm), ("lr", lr)):
        window[k] += v


def _run_eval(eval_fn: Callable, model: nn.Module, step: int) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return dict(eval_fn(model, step))
    finally:
        model.train(was_training)


def run_loop(
    setup: TrainSetup,
    objective: Objective,
    *,
    out_dir: str | Path,
    eval_every: int = 0,
    runtime: Runtime | None = None,
) -> TrainResult:
    """The step loop over a prepared :class:`TrainSetup`; resumes from ``out_dir``'s newest checkpoint.

    ``runtime`` lends the logger, ``eval_fn`` (called every ``eval_every`` steps and at the end), the
    checkpoints kept and the bar (:class:`~arc_lab.train.args.Runtime`)."""
    runtime = runtime or Runtime()
    out_dir, logger, optim = Path(out_dir), runtime.logger or NullLogger(), setup.optim
    eval_fn, keep_checkpoints, progress = runtime.eval_fn, runtime.keep_checkpoints, runtime.progress
    stepper: Stepper = setup.stepper
    state, resumed_from = LoopState(signature=setup.signature), None
    if (last := resume_checkpoint(out_dir)) is not None:
        state = load_checkpoint(last, stepper, signature=setup.signature)
        resumed_from = state.step
        log.info("resuming from %s (step %d of %d)", last, state.step, setup.total_steps)
    model = stepper.module
    model.train()
    stream = _stream(setup.dataset, optim.batch_size, optim.seed_value, state, setup.world, setup.rank)
    start = time.perf_counter()
    bar = tqdm(
        total=setup.total_steps, initial=state.step, disable=not progress, desc=type(objective).__name__
    )
    try:
        with disk_full_guard(out_dir, lambda: _last_checkpoint_note(out_dir)):
            ckpt = _steps(
                setup, objective, stream, state, out_dir, logger, eval_fn, eval_every, keep_checkpoints, bar
            )
    finally:
        bar.close()  # before any error message reaches the terminal
    if ckpt is None and last is not None:  # the run had finished before this call: check what it left
        check_model(
            model,
            setup,
            step=state.step,
            where=f"{last} was written by an earlier run without this check; delete {out_dir} to retrain.",
        )
    return TrainResult(
        model,
        state.step,
        state.history,
        ckpt or last,
        resumed_from,
        setup.reference,
        setup.dataset.truncated,
        state.tokens_seen,
        time.perf_counter() - start,
        last=next((h for h in reversed(state.history) if "loss" in h), {}),
    )


def _steps(
    setup: TrainSetup,
    objective: Objective,
    stream: Iterator[list[int]],
    state: LoopState,
    out_dir: Path,
    logger: Any,
    eval_fn: Callable | None,
    eval_every: int,
    keep_checkpoints: int,
    bar,
) -> Path | None:
    """Optimizer steps until the planned total, with logging, evaluation, health checks and checkpoints.

    Returns the newest checkpoint written here, or None when no step was left to do.
    """
    optim, stepper, model, ckpt = setup.optim, setup.stepper, setup.stepper.module, None
    window: defaultdict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    last_save = time.monotonic()
    with PreemptionGuard() as guard:
        while state.step < setup.total_steps:
            lr = stepper.lr()
            _optimizer_step(setup, objective, stream, state, window, out_dir)
            bar.update(1)
            done = state.step == setup.total_steps
            minutes = optim.save_every_minutes
            stop, timed = guard.poll(
                setup.world, bool(minutes) and time.monotonic() - last_save >= 60 * minutes
            )
            stop = stop and not done
            save = done or stop or timed or (optim.save_every and state.step % optim.save_every == 0)
            if save:  # the weights the last update produced; a broken state is never saved nor evaluated
                check_model(model, setup, step=state.step, where=_advice(out_dir, lr))
            if state.step % optim.log_every == 0 or done:
                record = _flush(window, state, setup, time.perf_counter() - t0)
                state.history.append(record)
                logger.log(record, state.step)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                log.info(
                    "step %d/%d %s",
                    state.step,
                    setup.total_steps,
                    " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step"),
                )
                window, t0 = defaultdict(float), time.perf_counter()
            if eval_fn is not None and ((eval_every and state.step % eval_every == 0) or done):
                metrics = _run_eval(eval_fn, model, state.step)
                state.history.append({"step": state.step, **metrics})
                logger.log(metrics, state.step)
            if save:
                ckpt = save_checkpoint(out_dir, stepper, state, keep=keep_checkpoints)
                last_save = time.monotonic()
            if stop:
                _preempted(guard, state, setup.total_steps, ckpt)
    return ckpt


def _preempted(guard: PreemptionGuard, state: LoopState, total: int, ckpt: Path | None) -> None:
    """After the checkpoint a scheduler's signal asked for: log it, pass the signal on, stop."""
    msg = (
        f"{guard.name} at step {state.step} of {total}: checkpoint {ckpt} saved after finishing that step, so a "
        "rerun of the same command (or the scheduler's requeue) resumes from it and redoes no step"
    )
    log.warning("preempted: %s", msg)
    guard.chain()  # submitit's handler requeues the job and exits here
    raise Preempted(msg)


def _across_ranks(window: dict[str, float], world: int) -> dict[str, float]:
    """Data-parallel runs log the mean over ranks (token counts: the sum), not rank 0's shard alone."""
    if world == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return window
    keys = sorted(window)
    values = torch.tensor([window[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(values)  # a collective: every rank logs at the same steps
    return {k: float(v) if k == "_tokens" else float(v) / world for k, v in zip(keys, values, strict=True)}


def _flush(window: dict[str, float], state: LoopState, setup: TrainSetup, elapsed: float) -> dict[str, float]:
    """Means over the logging window, plus step, epoch and throughput."""
    window = _across_ranks(window, setup.world)
    n = window["_n"]
    record: dict[str, float] = {"step": state.step}
    record.update({k: v / n for k, v in window.items() if not k.startswith("_")})
    record["tokens_per_s"] = window["_tokens"] / max(elapsed, 1e-9)
    record["epoch"] = state.epoch + state.batch_in_epoch / setup.batches_per_epoch
    return record


def train(
    model: nn.Module,
    tokenizer,
    objective: Objective,
    examples,
    args: StageArgs,
    *,
    out_dir: str | Path,
    runtime: Runtime | None = None,
) -> TrainResult:
    """Train ``model`` with ``objective`` on ``examples``; resume from ``out_dir`` if it holds a checkpoint.

    Args:
        model: init model (plain causal LM) on the training device; LoRA is added here if enabled.
        tokenizer: its tokenizer.
        objective: an :class:`~arc_lab.objectives.base.Objective`; the loop reads only its
            ``input_kind`` and ``needs_reference``.
        examples: PACKED blocks (N, seq_len), or SFT examples / preference pairs / lists
            (see :func:`arc_lab.train.batching.tokenize_examples`).
        args: :class:`~arc_lab.train.args.StageArgs`: ``optim``, ``lora`` (None or ``enabled=False`` = full
            fine-tune), ``seq_len`` (max tokens of prompt + answer), ``append_eos`` (off by default: the
            harness never scores it), ``precompute_reference`` (cache the reference log-probs instead of an
            adapter-off forward per step), ``eval_every`` (0 = only at the end); ``merge_dtype`` is the
            stage's, not read here.
        out_dir: where checkpoints go (``out_dir/checkpoints/step-*``).
        runtime: :class:`~arc_lab.train.args.Runtime`: the logger (any object with
            ``log(metrics: dict, step: int)``), ``eval_fn(model, step) -> dict``, the stepper factory
            (DeepSpeed plugs in here), the reference cache root, checkpoints kept, the bar.

    Raises:
        TrainingDiverged: non-finite loss or grad norm (last good checkpoint kept).
        ValueError: bad data, or ``out_dir`` holds a checkpoint of a different run.
    """
    setup = prepare(model, tokenizer, objective, examples, args, runtime)
    return run_loop(setup, objective, out_dir=out_dir, eval_every=args.eval_every, runtime=runtime)
