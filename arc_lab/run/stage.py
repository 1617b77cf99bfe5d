"""Train one stage: the shared loop on an init model and its examples, then merge and save.

Called by :mod:`arc_lab.run.pipeline` for a stage-cache miss (or an unfinished stage, which the loop resumes
from ``<stage_dir>/train/checkpoints``), with objects :mod:`arc_lab.run.build` made from the run config. It
takes typed arguments (:mod:`arc_lab.train.args`) and never reads a config; nothing here branches on an objective's name.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from arc_lab import dist
from arc_lab.run.runinfo import disk_full_guard, write_json
from arc_lab.train.args import Runtime, StageArgs

log = logging.getLogger(__name__)


class PrefixLogger:
    """Forward ``log`` calls to another logger with a key prefix (``cpt/loss``, ``cpt→dpo/loss``).

    The stages of a chain share the run's logger, and W&B drops steps that do not increase (and
    ``metrics.jsonl`` keeps the last line per step): step ``s`` of a stage is logged at ``offset + s``,
    ``offset`` being the optimizer steps of the stages before it in the chain (trained now or reused from
    the cache, so a rerun of an interrupted cell logs at the same steps); ``<prefix>step`` keeps ``s``.
    """

    def __init__(self, inner, prefix: str, offset: int = 0) -> None:
        self.inner, self.prefix, self.offset = inner, prefix, offset

    def log(self, metrics: dict[str, float], step: int) -> None:
        out = {f"{self.prefix}{k}": v for k, v in metrics.items() if k != "step"}
        out[f"{self.prefix}step"] = step
        self.inner.log(out, self.offset + step)


class FanOut:
    """Send ``log`` calls to several loggers (without finishing them: the run's logger outlives a stage,
    which is why :class:`arc_lab.train.loggers.MultiLogger` does not fit here)."""

    def __init__(self, *loggers) -> None:
        self.loggers = [lg for lg in loggers if lg is not None]

    def log(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)


def train_stage(
    model,
    tokenizer,
    objective,
    examples,
    args: StageArgs,
    *,
    stage_dir: Path,
    label: str,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Train ``model`` with ``objective`` on ``examples`` into ``stage_dir``, merge and save.

    Writes ``metrics.jsonl`` (training curve), ``train/checkpoints/`` (resumable; removed once ``model/``
    is written), ``model/`` (standalone checkpoint, a LoRA adapter merged in ``merge_dtype``) and
    ``train.json`` (summary).

    Args:
        model, tokenizer: the init model (on its training device) and its tokenizer.
        objective: the loss module; its ``input_kind`` matches ``examples``.
        examples: training examples (:func:`arc_lab.run.build.training_examples`).
        stage_dir: the stage-cache entry to write.
        label: the chain label (``cpt→dpo``), for logs and the summary.
        args: the stage's settings (:class:`arc_lab.train.args.StageArgs`: optimiser, LoRA, seq_len, EOS,
            reference mode, merge dtype, evaluation cadence; see :func:`arc_lab.train.loop.train`).
        runtime: :class:`arc_lab.train.args.Runtime`: the stepper factory (None: plain torch; DeepSpeed:
            :func:`arc_lab.run.build.stepper_factory`), the run's logger, already prefixed for this stage
            (:class:`PrefixLogger`; the stage's own ``metrics.jsonl`` is added here), the evaluation every
            ``args.eval_every`` optimizer steps.
    """
    from arc_lab.train.loggers import JsonlLogger, NullLogger
    from arc_lab.train.loop import train
    from arc_lab.train.merge import merge

    runtime = runtime or Runtime()
    local = JsonlLogger(stage_dir) if dist.is_main_process() else NullLogger()
    with_local = dataclasses.replace(runtime, logger=FanOut(local, runtime.logger))
    result = train(
        model, tokenizer, objective, examples, args, out_dir=stage_dir / "train", runtime=with_local
    )
    local.finish()
    if not dist.is_main_process():  # ranks of a DeepSpeed/torchrun run: rank 0 merges and saves
        dist.barrier()
        return {"label": label, "steps": result.steps, "rank": dist.rank()}
    summary = {
        "label": label,
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "reference": result.reference,
        "truncated": result.truncated,
        "tokens_seen": result.tokens_seen,
        "wall_s": result.wall_s,
        "last": result.last,
    }
    checkpoints = stage_dir / "train" / "checkpoints"
    with disk_full_guard(
        stage_dir / "model", f"the training checkpoints in {checkpoints} (a rerun only merges)"
    ):
        merge(result.model, tokenizer, stage_dir / "model", dtype=args.merge_dtype)
        write_json(stage_dir / "train.json", summary)
    # The stage is complete once model/ and train.json exist; its optimizer-state checkpoints (3x the weights
    # for a full fine-tune) are no longer needed for resuming.
    shutil.rmtree(checkpoints, ignore_errors=True)
    log.info("stage %s: removed training checkpoints after writing %s", label, stage_dir / "model")
    dist.barrier()
    return summary
