"""Run one configured stage, after the stages it builds on, with a content-addressed stage cache.

A run's ``stage.init`` names where its weights start: ``base`` (the configured model), an earlier stage
(``cpt``/``sft``/``dpo``: that stage's output under the *same* model and data config), or a checkpoint
path. Earlier stages are composed from their own presets (``stage=<init>`` + ``stage.init_overrides``)
and found by a hash of every config field that affects their weights (model, data, stage, objective,
seed and their own init): ``<output_root>/stages/<hash>/`` holds the resolved config, the training
checkpoints and the final ``model/``. A finished stage (``DONE``) is reused, an unfinished one resumes from
its checkpoint, and anything that matters changing gives a new hash. Evaluations are cached the same way
under ``<output_root>/evals/<hash>/`` (model identity + eval config), so a sweep evaluates the base
model once.

The run folder (Hydra's output dir) gets ``config.yaml``, ``provenance.json``, ``chain.json`` (every
stage and evaluation with its cache path), the final model's ``metrics.json`` and ``samples/``, and
``summary.md`` (the before/after table that is also printed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from arc_lab.config import ConfigError, RunConfig, to_run_config
from arc_lab.runinfo import atomic_write_text, config_hash, write_json, write_provenance

log = logging.getLogger(__name__)

#: The objective a stage trains with when it is composed as an init (``stage.init=cpt``).
DEFAULT_OBJECTIVE = {"cpt": "clm", "sft": "sft", "dpo": "dpo"}
#: Stage/optim fields that do not change the trained weights (kept out of the stage hash).
_NOT_HASHED = {"init_overrides", "log_every", "save_every", "merge", "deepspeed"}
#: The data fields a stage reads: CPT packs prose, the other stages build from multiple-choice sources
#: (the rest of ``data`` -- its name, the other kind's fields -- does not change the stage's weights).
_DATA_READ = {
    "cpt": ("cpt_sources", "max_cpt_texts", "hub"),
    "mc": ("train_sources", "max_items_per_source", "decontaminate", "hub"),
}


@dataclass
class ModelRef:
    """Where a model comes from: the configured base model, or a checkpoint directory."""

    #: identity for caches: ``base:<hash of model cfg>``, ``stage:<hash>`` or ``path:<dir>``
    key: str
    #: for tables: ``base``, ``cpt``, ``cpt→dpo``, ...
    label: str
    #: checkpoint directory; None = load from the model config
    path: Path | None = None


# ---------------------------------------------------------------------------------------------- chain
def init_config(cfg: DictConfig) -> DictConfig:
    """The full config of the stage preset ``cfg.stage.init`` names (``conf/stage/<init>.yaml`` +
    ``stage.init_overrides``), with ``cfg``'s model, data, eval, logger, seed and output root.

    Its objective is the stage's natural one (cpt: clm, sft: sft, dpo: dpo) unless ``init_overrides``
    picks another (``objective=simpo``).
    """
    init, extra = cfg.stage.init, list(cfg.stage.init_overrides)
    try:
        composed = compose(config_name="config", overrides=[f"stage={init}", *extra])
        if not any(o.startswith("objective=") for o in extra):
            natural = DEFAULT_OBJECTIVE.get(composed.stage.name, composed.objective.name)
            composed = compose(
                config_name="config", overrides=[f"stage={init}", f"objective={natural}", *extra]
            )
    except Exception as e:  # MissingConfigException and override errors name the option
        raise ConfigError(f"stage.init={init!r} with stage.init_overrides={extra}: {e}") from e
    out = OmegaConf.to_container(cfg, resolve=True)
    composed_c = OmegaConf.to_container(composed, resolve=True)
    out["stage"], out["objective"] = composed_c["stage"], composed_c["objective"]
    return OmegaConf.merge(OmegaConf.structured(RunConfig), out)


def plan_chain(cfg: DictConfig) -> list[DictConfig]:
    """Every stage config from the root (init ``base`` or a path) to ``cfg``, each validated, before
    any work is done."""
    chain = [cfg]
    while not _is_root(chain[0].stage.init):
        if len(chain) > 8:
            raise ConfigError(f"stage.init chain is longer than 8 or cyclic: {[c.stage.init for c in chain]}")
        parent = init_config(chain[0])
        if parent.stage.name == "eval":
            raise ConfigError(f"stage.init={chain[0].stage.init!r} is an eval stage; it produces no weights")
        to_run_config(parent)
        chain.insert(0, parent)
    return chain


def _is_root(init: str) -> bool:
    return init == "base" or "/" in init or Path(init).is_dir()


def root_ref(cfg: DictConfig) -> ModelRef:
    """The model the first stage of a chain starts from."""
    init = cfg.stage.init
    if init == "base":
        return ModelRef(key=f"base:{config_hash(cfg.model)}", label="base")
    path = Path(init)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"stage.init={init!r}: expected base, a stage preset ({_presets()}) or a checkpoint "
            f"directory containing config.json"
        )
    return ModelRef(key=f"path:{path.resolve()}", label=path.name, path=path)


def _presets() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "stage").glob("*.yaml"))


def stage_hash(cfg: DictConfig, init_key: str) -> str:
    """Content hash of everything that determines a stage's output weights."""
    c = OmegaConf.to_container(cfg, resolve=True)
    stage = {k: v for k, v in c["stage"].items() if k not in _NOT_HASHED}
    stage["optim"] = {k: v for k, v in stage["optim"].items() if k not in _NOT_HASHED}
    stage["init"] = init_key
    data = {k: c["data"][k] for k in _DATA_READ["cpt" if stage["name"] == "cpt" else "mc"]}
    return config_hash(
        {
            "model": c["model"],
            "data": data,
            "stage": stage,
            "objective": c["objective"],
            "seed": c["seed"],
            "data_dir": data_dir_of(cfg),
        }
    )


def stage_label(cfg: DictConfig, parent: ModelRef) -> str:
    """``cpt``, ``cpt→dpo``, ``cpt→dpo[simpo]``: the chain a model came from."""
    label = cfg.stage.name if parent.label == "base" else f"{parent.label}→{cfg.stage.name}"
    if cfg.objective.name != DEFAULT_OBJECTIVE.get(cfg.stage.name):
        label += f"[{cfg.objective.name}]"
    return label


def ensure_stage(
    cfg: DictConfig, parent: ModelRef, root: Path, chain: list[dict], cell_logger=None
) -> ModelRef:
    """Train the stage ``cfg`` describes on top of ``parent`` unless the stage cache has it."""
    label = stage_label(cfg, parent)
    h = stage_hash(cfg, parent.key)
    stage_dir = root / "stages" / h
    ref = ModelRef(key=f"stage:{h}", label=label, path=stage_dir / "model")
    _maybe_eval(cfg, parent, root, chain, when="before")
    offset = sum(c["steps"] for c in chain if c["kind"] == "stage")  # W&B steps continue along the chain
    cached = (stage_dir / "DONE").is_file()
    if not cached:
        with _stage_lock(stage_dir, label):
            cached = (stage_dir / "DONE").is_file()  # a parallel job may have trained it meanwhile
            if not cached:
                log.info("stage cache miss: training %s (%s) in %s", label, h, stage_dir)
                write_provenance(stage_dir, cfg, stage_hash=h, init=parent.key)
                from arc_lab.stage import train_stage

                train_stage(cfg, parent, stage_dir, label=label, cell_logger=cell_logger, step_offset=offset)
                atomic_write_text(stage_dir / "DONE", h + "\n")
    if cached:
        log.info("stage cache hit: %s (%s) -> %s", label, h, stage_dir)
    steps = json.loads((stage_dir / "train.json").read_text())["steps"]
    chain.append(
        {"kind": "stage", "label": label, "hash": h, "dir": str(stage_dir), "cached": cached, "steps": steps}
    )
    _maybe_eval(cfg, ref, root, chain, when="after")
    return ref


@contextlib.contextmanager
def _stage_lock(stage_dir: Path, label: str) -> Iterator[None]:
    """Hold an exclusive lock on ``stage_dir`` while training it, so that sweep jobs running in parallel
    (``hydra/launcher=submitit_local`` / ``slurm_gpu``) that need the same stage train it once: the others
    wait, then reuse it. The kernel releases the lock when a job dies. Not taken in multi-process
    (DeepSpeed/torchrun) runs, whose ranks train the stage together."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield
        return
    import fcntl

    stage_dir.mkdir(parents=True, exist_ok=True)
    with open(stage_dir / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("stage %s is being trained by another job (%s): waiting for it", label, stage_dir)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------------------ evaluation
def _eval_cfg(cfg: DictConfig) -> dict[str, Any]:
    e = OmegaConf.to_container(cfg.eval, resolve=True)
    return {k: v for k, v in e.items() if k not in ("before", "after", "every")}


def _maybe_eval(cfg: DictConfig, ref: ModelRef, root: Path, chain: list[dict], when: str) -> None:
    if cfg.eval[when]:
        ensure_eval(cfg, ref, root, chain)


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0 of one (``RANK`` as set by torchrun/deepspeed)."""
    return int(os.environ.get("RANK", "0")) == 0


def ensure_eval(cfg: DictConfig, ref: ModelRef, root: Path, chain: list[dict]) -> Path | None:
    """Evaluate ``ref`` with ``cfg.eval`` unless the eval cache has it; return the eval directory.

    In a multi-process (DeepSpeed/torchrun) run only rank 0 evaluates; other ranks get None.
    """
    if not is_main_process():
        return None
    done = [c for c in chain if c["kind"] == "eval" and c["model"] == ref.key]
    if done:
        return Path(done[0]["dir"])
    h = config_hash({"model": ref.key, "eval": _eval_cfg(cfg), "data_dir": data_dir_of(cfg)})
    eval_dir = root / "evals" / h
    cached = (eval_dir / "metrics.json").is_file()
    if cached:
        log.info("eval cache hit: %s (%s)", ref.label, eval_dir)
    else:
        model, tok = load_ref(cfg, ref)
        # written aside and renamed into place: metrics.json (the cache marker) and samples/ appear together,
        # never half-written by a killed run or interleaved with a parallel job evaluating the same model
        tmp = eval_dir.with_name(f".{h}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        run_eval_to(cfg, model, tok, tmp)
        del model
        _publish_dir(tmp, eval_dir)
    chain.append(
        {"kind": "eval", "label": ref.label, "model": ref.key, "dir": str(eval_dir), "cached": cached}
    )
    return eval_dir


def _publish_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; when a parallel job got there first, keep its (identical) result."""
    try:
        os.replace(tmp, final)
    except OSError:  # final exists and is not empty
        if not (final / "metrics.json").is_file():  # a leftover without the marker: replace it
            shutil.rmtree(final)
            os.replace(tmp, final)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _eval_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``run_eval`` keyword arguments from the ``eval`` group (everything but backend and out_dir)."""
    e = cfg.eval
    return dict(
        tasks=list(e.tasks),
        num_fewshot=e.num_fewshot,
        limit=e.limit,
        sample=e.sample,
        sample_seed=e.sample_seed,
        data_dir=data_dir_of(cfg),
        batch_size=e.batch_size,
        max_length=e.max_length,
        split=e.split,
    )


def run_eval_to(cfg: DictConfig, model, tok, out_dir: Path) -> dict:
    """Run the configured evaluation backend and write metrics.json + samples/ into ``out_dir``."""
    from arc_lab.eval import run_eval

    return run_eval(cfg.eval.backend, model, tok, out_dir=out_dir, **_eval_kwargs(cfg))


def periodic_eval_fn(cfg: DictConfig, tokenizer):
    """``eval_fn(model, step) -> flat metrics`` for the training loop (``eval.every`` and the end of a
    stage), or None when ``eval.every`` is 0 (the end-of-stage evaluation is then the cached one)."""
    if not cfg.eval.every:
        return None
    from arc_lab.eval import run_eval
    from arc_lab.eval.metrics import flat_metrics

    backend = "ours" if cfg.eval.backend == "both" else cfg.eval.backend  # one backend mid-training

    def eval_fn(model, step: int) -> dict[str, float]:
        metrics = run_eval(backend, model, tokenizer, out_dir=None, progress=False, **_eval_kwargs(cfg))
        return flat_metrics(metrics)

    return eval_fn


def data_dir_of(cfg: DictConfig) -> str | None:
    return cfg.data.data_dir or os.environ.get("ARC_LAB_DATA_DIR") or None


def load_ref(cfg: DictConfig, ref: ModelRef):
    """Load ``(model, tokenizer)`` for a base model config or a checkpoint directory."""
    from arc_lab.models import load_model

    m = cfg.model
    if ref.path is None:
        return load_model(
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
    return load_model(
        source="pretrained",
        path=str(ref.path),
        add_bos=m.add_bos,
        dtype=m.dtype,
        attn_implementation=m.attn_implementation,
    )


# ------------------------------------------------------------------------------------------------ run
def run_pipeline(run: RunConfig, plan: list[DictConfig], run_dir: str | Path) -> float | None:
    """Run a validated chain (:func:`plan_chain`; its last config is the run's own, validated as ``run``)
    into ``run_dir``; return the final first-task acc_norm (what a Hydra sweeper optimises)."""
    run_dir = Path(run_dir)
    root = Path(run.output_root)
    cfg = plan[-1]
    random.seed(run.seed)
    write_provenance(run_dir, cfg)
    chain: list[dict] = []
    ref = root_ref(plan[0])
    logger = cell_logger(cfg, run_dir)
    try:
        for stage_cfg in plan:
            if stage_cfg.stage.name != "eval":
                ref = ensure_stage(stage_cfg, ref, root, chain, cell_logger=logger)
        final = ensure_eval(cfg, ref, root, chain)
        if final is None:  # a non-zero rank of a distributed run: rank 0 evaluates and publishes
            return None
        logger.log_summary(_summary_metrics(final, chain))
    finally:
        logger.finish()
    write_json(run_dir / "chain.json", chain)
    write_json(run_dir / "data.json", _training_data(chain))
    _publish(final, run_dir)
    if ref.path is not None:
        (run_dir / "MODEL").write_text(f"{ref.path.resolve()}\n")
    table = summary_table(chain)
    atomic_write_text(run_dir / "summary.md", table + "\n")
    print(table)
    return _headline(final, list(run.eval.tasks))


def cell_logger(cfg: DictConfig, run_dir: Path):
    """This run's logger: ``metrics.jsonl`` in the run folder, plus W&B per ``logger.wandb``.

    The W&B run id is a hash of the resolved config, so rerunning an interrupted cell continues its W&B
    run; runs of one sweep share ``logger.group`` (default: the experiment name). Config is logged flat.
    """
    from arc_lab.train.loggers import config_run_id, make_logger

    container = OmegaConf.to_container(cfg, resolve=True)
    lg = cfg.logger
    return make_logger(
        lg.wandb,
        lg.project,
        lg.entity,
        lg.group or cfg.name,
        f"{cfg.name}:{cfg.stage.name}-{cfg.objective.name}",
        config_run_id(container, prefix=cfg.name),
        container,
        run_dir,
        rank=int(os.environ.get("RANK", "0")),
    )


def _summary_metrics(final: Path, chain: list[dict]) -> dict[str, float]:
    """``eval/<task>/acc``... of the final model, plus ``chain/<label>/<task>/acc``... of every model."""
    import json

    from arc_lab.eval.metrics import flat_metrics

    out = flat_metrics(json.loads((final / "metrics.json").read_text()))
    for c in chain:
        if c["kind"] == "eval":
            for k, v in flat_metrics(json.loads((Path(c["dir"]) / "metrics.json").read_text())).items():
                out[f"chain/{c['label']}/{k.removeprefix('eval/')}"] = v
    return out


def _training_data(chain: list[dict]) -> dict[str, Any]:
    """What every stage of the chain trained on (sources, counts, fingerprints), keyed by stage label."""
    return {
        c["label"]: json.loads((Path(c["dir"]) / "data.json").read_text())
        for c in chain
        if c["kind"] == "stage" and (Path(c["dir"]) / "data.json").is_file()
    }


def _publish(eval_dir: Path, run_dir: Path) -> None:
    """Copy the final evaluation's metrics.json and samples/ into the run folder."""
    shutil.copy2(eval_dir / "metrics.json", run_dir / "metrics.json")
    if (eval_dir / "samples").is_dir():
        shutil.copytree(eval_dir / "samples", run_dir / "samples", dirs_exist_ok=True)


def _headline(eval_dir: Path, tasks: list[str]) -> float | None:
    import json

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    return float(metrics[tasks[0]]["acc_norm"]) if tasks and tasks[0] in metrics else None


def summary_table(chain: list[dict]) -> str:
    """Markdown table: one row per evaluated model in chain order, acc and acc_norm per task."""
    import json

    rows, tasks = [], []
    for c in chain:
        if c["kind"] != "eval":
            continue
        metrics = json.loads((Path(c["dir"]) / "metrics.json").read_text())
        per_task = {t: v for t, v in metrics.items() if isinstance(v, dict) and "acc" in v}
        tasks = tasks or list(per_task)
        rows.append((c["label"], per_task))
    head = "| model | " + " | ".join(f"{t} acc | {t} acc_norm | n" for t in tasks) + " |"
    sep = "|---" * (1 + 3 * len(tasks)) + "|"
    lines = [head, sep]
    for label, per_task in rows:
        cells = []
        for t in tasks:
            m = per_task.get(t, {})
            cells.append(
                f"{m.get('acc', float('nan')):.4f} ± {m.get('acc_stderr', float('nan')):.4f} | "
                f"{m.get('acc_norm', float('nan')):.4f} ± {m.get('acc_norm_stderr', float('nan')):.4f} | "
                f"{m.get('n', '')}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
