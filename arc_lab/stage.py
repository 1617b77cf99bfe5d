"""Train one stage: load its init model, build its data, run the shared loop, merge, save.

Called by :mod:`arc_lab.pipeline` for a stage-cache miss (or an unfinished stage, which the loop
resumes from ``<stage_dir>/train/checkpoints``). The objective's declared ``input_kind`` decides which
training examples are built; nothing here branches on an objective's name.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from arc_lab.data.builders import (
    arc_challenge_test_items,
    build_lists,
    build_pairs,
    build_sft,
    cpt_texts,
    decontaminate_items,
    pack_blocks,
)
from arc_lab.data.loaders import DataError, dataset_fingerprint, load_mc, resolve_data_dir, split_location
from arc_lab.data.records import MCItem
from arc_lab.objectives import build_objective
from arc_lab.objectives.base import InputKind
from arc_lab.runinfo import config_hash, disk_full_guard, write_json

log = logging.getLogger(__name__)


def training_items(
    sources: list[str], *, data_dir: str | None, hub: bool, cap: int | None, seed: int
) -> list[MCItem]:
    """The *train* split of every source; ``cap`` keeps a seeded random subset per source."""
    items: list[MCItem] = []
    for source in sources:
        rows = load_mc(source, "train", data_dir, hub=hub, duplicates="drop")
        if not rows:
            raise DataError(
                f"{split_location(source, 'train', data_dir, hub)}: no training questions "
                f"(data.train_sources has {source!r}); fill the file or drop the source"
            )
        if cap is not None and len(rows) > cap:
            rows = random.Random(seed).sample(rows, cap)
        items.extend(rows)
    return items


def decontaminate(items: list[MCItem], *, data_dir: str | None, hub: bool, mode: str) -> dict[str, Any]:
    """Apply ``data.decontaminate`` (drop | refuse | off) against ARC-Challenge test; see
    :func:`arc_lab.data.builders.decontaminate_items`. Drops from ``items`` in place.

    Training only on the built-in set cannot contain ARC questions, so there the check runs when the
    ARC-Challenge test file is available and is reported as skipped (loudly) when it is not.

    Returns:
        What ``data.json`` records: the mode, how many questions were compared and removed, and the
        removed ids (``source/split/id``).
    """
    forbidden: list[MCItem] = []
    if mode != "off":
        builtin_only = all(item.source == "builtin" for item in items)
        forbidden = arc_challenge_test_items(data_dir, hub=hub, required=not builtin_only)
    items[:], removed = decontaminate_items(items, forbidden, mode=mode)
    return {
        "mode": mode,
        "against": "arc_challenge/test",
        "evaluation_questions": len(forbidden),
        "removed": len(removed),
        "removed_ids": [f"{o.source}/{o.split}/{o.id}" for o in removed],
    }


def build_examples(
    kind: InputKind, data: DictConfig, tokenizer, *, seq_len: int, seed: int, data_dir: str | None
) -> tuple[Any, dict[str, Any]]:
    """Training examples for an objective's input kind, plus a description for ``data.json``."""
    info: dict[str, Any] = {"kind": kind.value}
    if kind is InputKind.PACKED:
        texts = []
        for source in data.cpt_sources:  # one by one, to name a source that gives nothing
            got = cpt_texts([source], data_dir, hub=data.hub)
            if not got:
                raise DataError(
                    f"{_cpt_location(source, data_dir, data.hub)}: no documents for CPT "
                    f"(data.cpt_sources has {source!r}); fill it or drop the source"
                )
            texts += got
        if data.max_cpt_texts is not None:
            texts = texts[: data.max_cpt_texts]
        blocks = pack_blocks(texts, tokenizer, seq_len=seq_len)
        info.update(
            sources=list(data.cpt_sources),
            documents=len(texts),
            blocks=int(blocks.shape[0]),
            seq_len=seq_len,
            fingerprint=config_hash(list(texts), n=16),
        )
        return blocks, info
    items = training_items(
        list(data.train_sources), data_dir=data_dir, hub=data.hub, cap=data.max_items_per_source, seed=seed
    )
    decontamination = decontaminate(items, data_dir=data_dir, hub=data.hub, mode=data.decontaminate)
    builder = {InputKind.ANSWER: build_sft, InputKind.PAIR: build_pairs, InputKind.LIST: build_lists}[kind]
    examples = builder(items)
    info.update(
        sources=list(data.train_sources),
        questions=len(items),
        examples=len(examples),
        fingerprints={s: dataset_fingerprint(s, "train", data_dir, hub=data.hub) for s in data.train_sources},
        decontamination=decontamination,
    )
    return examples, info


def _cpt_location(source: str, data_dir: str | None, hub: bool) -> str:
    """Where a ``data.cpt_sources`` entry is read from, for messages."""
    if source == "sciq_support":
        return split_location("sciq", "train", data_dir, hub)
    root = resolve_data_dir(data_dir)
    return str(root / source) if root is not None else f"{source} ({'the Hub' if hub else 'no data folder'})"


def data_inputs(kind: InputKind, data: DictConfig, *, data_dir: str | None) -> dict[str, str]:
    """Content fingerprints of everything :func:`build_examples` reads for ``kind``, for the stage cache key.

    Local files: the sha256 of their bytes; generated data (``builtin``, ``builtin_prose``): the sha256 of
    what the generator yields; the Hub: the sha256 of the records, downloaded first (the Hub offers no
    content fingerprint before that). The decontamination set enters as the fingerprint of its normalised
    questions, the only thing the check compares (its answer keys do not change a stage).

    Raises:
        DataSourceError, DataError: as :func:`build_examples` would, before any work.
    """
    from arc_lab.data.builders import normalize_question
    from arc_lab.data.builtin import builtin_prose
    from arc_lab.data.loaders import DataSourceError, camel_fingerprint

    hub = bool(data.hub)
    if kind is InputKind.PACKED:
        out = {}
        for source in data.cpt_sources:
            if source == "builtin_prose":
                out[source] = "generated:" + config_hash(builtin_prose(), n=16)
            elif source == "sciq_support":
                out[source] = dataset_fingerprint("sciq", "train", data_dir, hub=hub)
            else:
                out[source] = camel_fingerprint(source.removeprefix("camel_"), data_dir, hub=hub)
        return out
    out = {f"{s}/train": dataset_fingerprint(s, "train", data_dir, hub=hub) for s in data.train_sources}
    try:
        questions = sorted(
            {normalize_question(i.question) for i in load_mc("arc_challenge", "test", data_dir, hub)}
        )
        out["decontamination/arc_challenge/test"] = config_hash(questions, n=16)
    except DataSourceError:
        if any(s != "builtin" for s in data.train_sources):
            raise
        out["decontamination/arc_challenge/test"] = "unavailable"
    return out


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
    cfg: DictConfig, parent, stage_dir: Path, *, label: str, cell_logger=None, step_offset: int = 0
) -> dict[str, Any]:
    """Train ``cfg``'s stage from ``parent`` (a :class:`arc_lab.pipeline.ModelRef`) into ``stage_dir``.

    Writes ``data.json``, ``metrics.jsonl`` (training curve), ``train/checkpoints/`` (resumable),
    ``model/`` (standalone checkpoint, LoRA merged) and ``train.json`` (summary). ``cell_logger`` (the
    run's logger) gets the curve too, as ``<label>/<metric>`` at step ``step_offset + step``.
    """
    from arc_lab.pipeline import data_dir_of, is_main_process, load_ref, periodic_eval_fn
    from arc_lab.train.deepspeed_engine import make_stepper_factory
    from arc_lab.train.loggers import JsonlLogger, NullLogger
    from arc_lab.train.loop import train
    from arc_lab.train.merge import merge

    objective = build_objective(**OmegaConf.to_container(cfg.objective, resolve=True))
    model, tok = load_ref(cfg, parent)
    if torch.cuda.is_available():  # each rank of a multi-GPU run on its own device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        model = model.cuda()
    stage = cfg.stage
    examples, info = build_examples(
        objective.input_kind, cfg.data, tok, seq_len=stage.seq_len, seed=cfg.seed, data_dir=data_dir_of(cfg)
    )
    write_json(stage_dir / "data.json", info)
    log.info("stage %s: %s", label, info)
    optim = OmegaConf.to_object(stage.optim)
    local = JsonlLogger(stage_dir) if is_main_process() else NullLogger()
    logger = FanOut(local, PrefixLogger(cell_logger, f"{label}/", step_offset) if cell_logger else None)
    eval_fn = periodic_eval_fn(cfg, tok)
    result = train(
        model,
        tok,
        objective,
        examples,
        optim=optim,
        out_dir=stage_dir / "train",
        seq_len=stage.seq_len,
        lora=OmegaConf.to_object(stage.lora),
        append_eos=stage.append_eos,
        precompute_reference=stage.precompute_reference,
        logger=logger,
        eval_fn=eval_fn,
        eval_every=cfg.eval.every,
        stepper_factory=make_stepper_factory(
            OmegaConf.to_container(stage.deepspeed) if stage.deepspeed else None,
            micro_batch_size=optim.batch_size,
            precision=optim.precision,
        ),
    )
    local.finish()
    if not is_main_process():  # ranks of a DeepSpeed/torchrun run: rank 0 merges and saves
        _barrier()
        return {"label": label, "steps": result.steps, "rank": int(os.environ["RANK"])}
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
        merge(result.model, tok, stage_dir / "model", dtype=stage.merge_dtype)
        write_json(stage_dir / "train.json", summary)
    # The stage is complete once model/ and train.json exist; its optimizer-state checkpoints (3x the weights
    # for a full fine-tune) are no longer needed for resuming.
    shutil.rmtree(checkpoints, ignore_errors=True)
    log.info("stage %s: removed training checkpoints after writing %s", label, stage_dir / "model")
    _barrier()
    return summary


def _barrier() -> None:
    """Wait for every rank (no-op outside a distributed run)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
