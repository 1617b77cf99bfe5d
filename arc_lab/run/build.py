"""Build the objects a run needs from its validated :class:`~arc_lab.config.RunConfig`.

This is the one module that reads the run config: the model (a base model config or a checkpoint), the
objective, a stage's training examples and the content fingerprints of its data, the evaluation call and
its mid-training callback, the run's logger and the stepper factory. Everything it builds takes flat,
typed arguments (:func:`arc_lab.run.stage.train_stage`, :func:`arc_lab.train.loop.train`,
:func:`arc_lab.eval.run_eval`, ...), so those modules never see a config.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from arc_lab import dist
from arc_lab.config import EvalConfig, RunConfig
from arc_lab.data import training
from arc_lab.run.runinfo import config_hash

log = logging.getLogger(__name__)


def as_dict(run: RunConfig) -> dict[str, Any]:
    """The run config as plain containers (what ``config.yaml``, the cache keys and W&B see)."""
    return dataclasses.asdict(run)


def data_dir(run: RunConfig) -> str | None:
    """``data.data_dir``, else ``$ARC_LAB_DATA_DIR``, else None (the built-in set / the Hub)."""
    return run.data.data_dir or os.environ.get("ARC_LAB_DATA_DIR") or None


# ------------------------------------------------------------------------------------------------ model
def load_model(run: RunConfig, path: Path | None = None, *, to_device: bool = False):
    """``(model, tokenizer)`` of the base model ``run.model`` describes, or of the checkpoint ``path``
    (loaded with the model config's tokenizer and dtype settings).

    ``to_device``: move it to this rank's GPU when CUDA is available (training; evaluation places the
    model itself).
    """
    from arc_lab.models import load_model as _load

    m = run.model
    if path is None:
        model, tok = _load(
            source=m.source,
            path=m.path,
            gguf_package=m.gguf_package,
            gguf_file=m.gguf_file,
            arch=m.arch,
            tiny=dict(m.tiny),
            tokenizer=m.tokenizer,
            add_bos=m.add_bos,
            dtype=m.dtype,
            attn_implementation=m.attn_implementation,
            seed=m.seed,
        )
    else:
        model, tok = _load(
            source="pretrained",
            path=str(path),
            add_bos=m.add_bos,
            dtype=m.dtype,
            attn_implementation=m.attn_implementation,
        )
    if to_device:
        import torch

        if torch.cuda.is_available():  # each rank of a multi-GPU run on its own device
            torch.cuda.set_device(dist.local_rank())
            model = model.cuda()
    return model, tok


def base_model_key(run: RunConfig) -> str:
    """The configured base model's identity for the caches: a hash of its config, plus the digest of its
    files when it is a local directory."""
    from arc_lab.run import manifest

    key = f"base:{config_hash(dataclasses.asdict(run.model))}"
    if run.model.source == "pretrained" and Path(run.model.path).is_dir():  # a local dir, by content
        key += ":" + manifest.tree_digest(run.model.path)[:16]
    return key


# ------------------------------------------------------------------------------------------- objective
def objective(run: RunConfig):
    """The loss module ``run.objective`` names, with its (validated) parameters."""
    from arc_lab.objectives import build_objective

    return build_objective(**run.objective)


def input_kind(run: RunConfig):
    """The objective's declared input kind (what training examples the stage builds)."""
    from arc_lab.objectives import OBJECTIVES

    return OBJECTIVES[run.objective["name"]].input_kind


# ---------------------------------------------------------------------------------------- training data
def training_examples(run: RunConfig, kind, tokenizer) -> tuple[Any, dict[str, Any]]:
    """Training examples for an objective's input kind, plus a description for ``data.json``."""
    from arc_lab.data.builders import build_lists, build_pairs, build_sft, pack_blocks
    from arc_lab.data.loaders import dataset_fingerprint
    from arc_lab.objectives.base import InputKind

    data, root = run.data, data_dir(run)
    info: dict[str, Any] = {"kind": kind.value}
    if kind is InputKind.PACKED:
        texts = training.cpt_documents(data.cpt_sources, data_dir=root, hub=data.hub, cap=data.max_cpt_texts)
        blocks = pack_blocks(texts, tokenizer, seq_len=run.stage.seq_len)
        info.update(
            sources=list(data.cpt_sources),
            documents=len(texts),
            blocks=int(blocks.shape[0]),
            seq_len=run.stage.seq_len,
            fingerprint=config_hash(list(texts), n=16),
        )
        return blocks, info
    items = training.training_items(
        data.train_sources, data_dir=root, hub=data.hub, cap=data.max_items_per_source, seed=run.seed
    )
    decontamination = training.decontaminate(
        items, data_dir=root, hub=data.hub, mode=data.decontaminate, eval_tasks=run.eval.tasks
    )
    builders: dict[Any, Any] = {
        InputKind.ANSWER: build_sft,
        InputKind.PAIR: build_pairs,
        InputKind.LIST: build_lists,
    }
    builder = builders[kind]
    examples = builder(items)
    if not examples:  # e.g. every distractor repeats its gold answer: no pair carries a signal
        from arc_lab.data.loaders import DataError

        raise DataError(
            f"data.train_sources={list(data.train_sources)}: {len(items)} training question(s) give no "
            f"{kind.value} example for objective {run.objective['name']!r}"
            + (" (every distractor equals its question's answer)" if kind is InputKind.PAIR and items else "")
            + "; check the training files or pick other sources"
        )
    info.update(
        sources=list(data.train_sources),
        questions=len(items),
        examples=len(examples),
        fingerprints={s: dataset_fingerprint(s, "train", root, hub=data.hub) for s in data.train_sources},
        decontamination=decontamination,
    )
    return examples, info


def stage_inputs(run: RunConfig) -> dict[str, str]:
    """Content fingerprints of the data the stage ``run`` reads (the stage cache key's data part).

    Raises:
        DataSourceError, DataError: as :func:`training_examples` would, before any work.
    """
    from arc_lab.objectives.base import InputKind

    data = run.data
    if input_kind(run) is InputKind.PACKED:
        return training.cpt_inputs(data.cpt_sources, data_dir=data_dir(run), hub=bool(data.hub))
    return training.question_inputs(
        data.train_sources, data_dir=data_dir(run), hub=bool(data.hub), eval_tasks=run.eval.tasks
    )


def stage_args(run: RunConfig):
    """The stage's training settings (:class:`arc_lab.train.args.StageArgs`) from ``run.stage`` and
    ``run.eval.every``: what :func:`arc_lab.run.stage.train_stage` takes."""
    from arc_lab.train.args import StageArgs

    s = run.stage
    return StageArgs(
        optim=s.optim,
        lora=s.lora,
        seq_len=s.seq_len,
        append_eos=s.append_eos,
        precompute_reference=s.precompute_reference,
        merge_dtype=s.merge_dtype,
        eval_every=run.eval.every,
    )


def stepper_factory(run: RunConfig):
    """Plain torch, or DeepSpeed when ``stage.deepspeed`` is set (``launcher=deepspeed_zero2``)."""
    from arc_lab.train.deepspeed_engine import make_stepper_factory

    o = run.stage.optim
    return make_stepper_factory(run.stage.deepspeed, micro_batch_size=o.batch_size, precision=o.precision)


# ------------------------------------------------------------------------------------------ evaluation
def eval_key(run: RunConfig) -> dict[str, Any]:
    """The ``eval`` fields that change what an evaluation computes (not when it runs)."""
    e = dataclasses.asdict(run.eval)
    return {k: v for k, v in e.items() if k not in ("before", "after", "every")}


def eval_inputs(run: RunConfig) -> dict[str, str]:
    """Content fingerprints of the data ``run.eval`` reads (:func:`arc_lab.eval.runner.eval_data_inputs`)."""
    from arc_lab.eval.runner import eval_data_inputs

    e = run.eval
    return eval_data_inputs(list(e.tasks), data_dir(run), e.split, e.num_fewshot)


def _eval_kwargs(e: EvalConfig, root: str | None) -> dict[str, Any]:
    """``run_eval`` keyword arguments from the ``eval`` group (everything but backend and out_dir)."""
    return dict(
        tasks=list(e.tasks),
        num_fewshot=e.num_fewshot,
        limit=e.limit,
        sample=e.sample,
        sample_seed=e.sample_seed,
        data_dir=root,
        batch_size=e.batch_size,
        max_length=e.max_length,
        split=e.split,
    )


def evaluate(run: RunConfig, model, tokenizer, out_dir: Path) -> dict:
    """Run the configured evaluation backend and write ``metrics.json`` + ``samples/`` into ``out_dir``."""
    from arc_lab.eval import run_eval

    return run_eval(
        run.eval.backend, model, tokenizer, out_dir=out_dir, **_eval_kwargs(run.eval, data_dir(run))
    )


def periodic_eval_fn(run: RunConfig, tokenizer):
    """``eval_fn(model, step) -> flat metrics`` for the training loop (``eval.every`` and the end of a
    stage), or None when ``eval.every`` is 0 (the end-of-stage evaluation is then the cached one)."""
    if not run.eval.every:
        return None
    from arc_lab.eval import run_eval
    from arc_lab.eval.metrics import flat_metrics

    backend = "ours" if run.eval.backend == "both" else run.eval.backend  # one backend mid-training
    kwargs = _eval_kwargs(run.eval, data_dir(run))

    def eval_fn(model, step: int) -> dict[str, float]:
        return flat_metrics(run_eval(backend, model, tokenizer, out_dir=None, progress=False, **kwargs))

    return eval_fn


# --------------------------------------------------------------------------------------------- logging
def cell_logger(run: RunConfig, run_dir: Path):
    """This run's logger: ``metrics.jsonl`` in the run folder, plus W&B per ``logger.wandb``.

    The W&B run id is a hash of the resolved config, so rerunning an interrupted cell continues its W&B
    run; runs of one sweep share ``logger.group`` (default: the experiment name). Config is logged flat.
    """
    from arc_lab.train.loggers import config_run_id, make_logger

    container = as_dict(run)
    lg = run.logger
    return make_logger(
        lg.wandb,
        lg.project,
        lg.entity,
        lg.group or run.name,
        f"{run.name}:{run.stage.name}-{run.objective['name']}",
        config_run_id(container, prefix=run.name),
        container,
        run_dir,
        rank=dist.rank(),
    )
