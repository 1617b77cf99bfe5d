"""Run one configured stage, after the stages it builds on, with a content-addressed stage cache.

A run's ``stage.init`` names where its weights start: ``base`` (the configured model), an earlier stage
(``cpt``/``sft``/``dpo``: that stage's output under the *same* model and data config), or a checkpoint
path. Earlier stages are composed from their own presets (``stage=<init>`` + ``stage.init_overrides``)
and found by a hash of every config field that affects their weights (model, data, stage, objective,
seed and their own init) and of the *content* of the data they read (:func:`arc_lab.stage.data_inputs`:
file digests, not the data folder's path): ``<output_root>/stages/<hash>/`` holds the resolved config, the
training checkpoints and the final ``model/``. A finished stage (``DONE`` and a ``MANIFEST.json`` its files
still match) is reused; an unfinished one resumes from its checkpoint; a finished one whose files no longer
match its manifest is rebuilt (logged as a WARNING naming the damage); anything that matters changing gives
a new hash. A model's identity (what its evaluations and the stages built on it are keyed on) includes the
digest of its weights. Evaluations are cached the same way under ``<output_root>/evals/<hash>/`` (model
identity + eval config + content of the eval data), so a sweep evaluates the base model once; an entry that
fails its manifest (a truncated ``metrics.json``...) is a logged miss and is recomputed. Every hit and
miss is logged with its reason. File digests are memoised in ``<output_root>/fingerprint-memo.json``
(:mod:`arc_lab.manifest`).

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

from arc_lab import manifest
from arc_lab.cache import STAGE_ENTRY_PARTS, eval_entry_problem, stage_entry_problem, why_no_entry
from arc_lab.config import ConfigError, RunConfig, check_known_keys, to_run_config
from arc_lab.eval.metrics import NonFiniteLogLikelihood
from arc_lab.runinfo import atomic_write_text, config_hash, disk_full_guard, write_json, write_provenance

log = logging.getLogger(__name__)

#: The objective a stage trains with when it is composed as an init (``stage.init=cpt``).
DEFAULT_OBJECTIVE = {"cpt": "clm", "sft": "sft", "dpo": "dpo"}
#: Stage/optim fields that do not change the trained weights (kept out of the stage hash).
_NOT_HASHED = {"init_overrides", "log_every", "save_every", "merge", "deepspeed"}
#: The data fields a stage reads: CPT packs prose, the other stages build from multiple-choice sources
#: (the rest of ``data`` -- its name, the other kind's fields -- does not change the stage's weights).
#: The content of the files they name is hashed separately (:func:`arc_lab.stage.data_inputs`).
_DATA_READ = {
    "cpt": ("cpt_sources", "max_cpt_texts", "hub"),
    "mc": ("train_sources", "max_items_per_source", "decontaminate", "hub"),
}


@dataclass
class ModelRef:
    """Where a model comes from: the configured base model, or a checkpoint directory."""

    #: identity for caches: ``base:<hash of model cfg>[:<weights digest>]``, ``stage:<hash>:<weights digest>``
    #: or ``path:<digest of the directory's files>``
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
        check_known_keys(composed)  # a `+key` typo in init_overrides
    except Exception as e:  # MissingConfigException and override errors name the option
        msg = " ".join(str(e).split("\n"))
        raise ConfigError(f"stage.init={init!r} with stage.init_overrides={extra}: {msg}") from e
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
        try:
            to_run_config(parent)
        except ConfigError as e:
            raise ConfigError(
                f"stage.init={chain[0].stage.init!r} (the stage this one starts from): {e}"
            ) from e
        chain.insert(0, parent)
    return chain


def _is_root(init: str) -> bool:
    return init == "base" or "/" in init or Path(init).is_dir()


def root_ref(cfg: DictConfig) -> ModelRef:
    """The model the first stage of a chain starts from."""
    init = cfg.stage.init
    if init == "base":
        key = f"base:{config_hash(cfg.model)}"
        if cfg.model.source == "pretrained" and Path(cfg.model.path).is_dir():  # a local dir, by content
            key += ":" + manifest.tree_digest(cfg.model.path)[:16]
        return ModelRef(key=key, label="base")
    path = Path(init)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"stage.init={init!r}: expected base, a stage preset ({_presets()}) or a checkpoint "
            f"directory containing config.json"
        )
    return ModelRef(key=f"path:{manifest.tree_digest(path)[:16]}", label=path.name, path=path)


def _presets() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "stage").glob("*.yaml"))


def stage_inputs(cfg: DictConfig) -> dict[str, str]:
    """Content fingerprints of the data the stage ``cfg`` reads (:func:`arc_lab.stage.data_inputs`)."""
    from arc_lab.objectives import OBJECTIVES
    from arc_lab.stage import data_inputs

    return data_inputs(OBJECTIVES[cfg.objective.name].input_kind, cfg.data, data_dir=data_dir_of(cfg))


def eval_inputs(cfg: DictConfig) -> dict[str, str]:
    """Content fingerprints of the data ``cfg.eval`` reads (:func:`arc_lab.eval.runner.eval_data_inputs`)."""
    from arc_lab.eval.runner import eval_data_inputs

    e = cfg.eval
    num_fewshot = (
        OmegaConf.to_container(e.num_fewshot) if OmegaConf.is_config(e.num_fewshot) else e.num_fewshot
    )
    return eval_data_inputs(list(e.tasks), data_dir_of(cfg), e.split, num_fewshot)


def _stage_config_key(cfg: DictConfig, init_key: str) -> dict[str, Any]:
    """The config fields that determine a stage's weights, with the init model's identity."""
    c = OmegaConf.to_container(cfg, resolve=True)
    stage = {k: v for k, v in c["stage"].items() if k not in _NOT_HASHED}
    stage["optim"] = {k: v for k, v in stage["optim"].items() if k not in _NOT_HASHED}
    stage["init"] = init_key
    data = {k: c["data"][k] for k in _DATA_READ["cpt" if stage["name"] == "cpt" else "mc"]}
    return {"model": c["model"], "data": data, "stage": stage, "objective": c["objective"], "seed": c["seed"]}


def stage_hash(cfg: DictConfig, init_key: str, inputs: dict[str, str]) -> str:
    """Content hash of everything that determines a stage's output weights: the config fields that matter,
    the init model's identity and the content of the data read (``inputs``, from :func:`stage_inputs`)."""
    return config_hash({**_stage_config_key(cfg, init_key), "data_inputs": inputs})


def stage_label(cfg: DictConfig, parent: ModelRef) -> str:
    """``cpt``, ``cpt→dpo``, ``cpt→dpo[simpo]``: the chain a model came from."""
    label = cfg.stage.name if parent.label == "base" else f"{parent.label}→{cfg.stage.name}"
    if cfg.objective.name != DEFAULT_OBJECTIVE.get(cfg.stage.name):
        label += f"[{cfg.objective.name}]"
    return label


def ensure_stage(
    cfg: DictConfig, parent: ModelRef, root: Path, chain: list[dict], cell_logger=None
) -> ModelRef:
    """Train the stage ``cfg`` describes on top of ``parent`` unless the stage cache has it intact."""
    label = stage_label(cfg, parent)
    inputs = stage_inputs(cfg)
    h = stage_hash(cfg, parent.key, inputs)
    stage_dir = root / "stages" / h
    _maybe_eval(cfg, parent, root, chain, when="before")
    offset = sum(c["steps"] for c in chain if c["kind"] == "stage")  # W&B steps continue along the chain
    problem = stage_entry_problem(stage_dir)
    cached = problem is None
    config_key = config_hash(_stage_config_key(cfg, parent.key))
    if problem == "not trained yet":
        problem = why_no_entry(root / "stages", "provenance.json", config_key, inputs)
    if not cached:
        with _stage_lock(stage_dir, label):
            cached = stage_entry_problem(stage_dir) is None  # a parallel job may have trained it meanwhile
            if not cached:
                _train_entry(
                    cfg, parent, stage_dir, h, config_key, inputs, problem, label, cell_logger, offset
                )
    if cached:
        log.info(
            "stage cache hit: %s (%s) -> %s: DONE, files match %s", label, h, stage_dir, manifest.MANIFEST
        )
    manifest.save_memo()
    ref = ModelRef(
        key=f"stage:{h}:{manifest.manifest_digest(stage_dir, 'model')}", label=label, path=stage_dir / "model"
    )
    steps = json.loads((stage_dir / "train.json").read_text())["steps"]
    chain.append(
        {"kind": "stage", "label": label, "hash": h, "dir": str(stage_dir), "cached": cached, "steps": steps}
    )
    try:
        _maybe_eval(cfg, ref, root, chain, when="after")
    except NonFiniteLogLikelihood as e:  # weights that cannot be scored are no finished stage
        (stage_dir / "DONE").unlink(missing_ok=True)
        raise NonFiniteLogLikelihood(f"{e}. Stage {label} ({stage_dir}) is no longer marked DONE") from e
    return ref


def _train_entry(
    cfg: DictConfig,
    parent: ModelRef,
    stage_dir: Path,
    h: str,
    config_key: str,
    inputs: dict[str, str],
    problem: str,
    label: str,
    cell_logger,
    offset: int,
) -> None:
    """Train (or rebuild) the stage entry ``stage_dir``, then write its manifest and ``DONE``."""
    from arc_lab.stage import _barrier, train_stage

    # A finished entry damaged since (its checkpoints are gone: it trains from the start). Nothing is
    # deleted first: model/, train.json, the manifest and DONE are replaced as training finishes, and until
    # then every rank and job sees the same damaged entry (a rebuild killed midway resumes from its
    # checkpoints on the next run).
    if (stage_dir / "DONE").is_file():
        log.warning(
            "stage cache entry %s (%s) is incomplete or changed (%s): rebuilding it",
            stage_dir,
            label,
            problem,
        )
    log.info("stage cache miss: training %s (%s) in %s (%s)", label, h, stage_dir, problem)
    if is_main_process():
        write_provenance(
            stage_dir, cfg, stage_hash=h, init=parent.key, config_key=config_key, data_inputs=inputs
        )
    train_stage(cfg, parent, stage_dir, label=label, cell_logger=cell_logger, step_offset=offset)
    now = stage_inputs(cfg)
    if now != inputs:
        changed = sorted(k for k in set(now) | set(inputs) if now.get(k) != inputs.get(k))
        raise RuntimeError(
            f"the data of stage {label} changed while it trained ({changed}); {stage_dir} is left unfinished "
            "(no DONE): rerun to train it on the data as it is now"
        )
    if is_main_process():
        manifest.write_manifest(
            stage_dir, STAGE_ENTRY_PARTS
        )  # last but DONE: a stage is whole once both exist
        atomic_write_text(stage_dir / "DONE", h + "\n")
    _barrier()


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
    inputs = eval_inputs(cfg)
    config_key = config_hash({"model": ref.key, "eval": _eval_cfg(cfg)})
    h = config_hash({"model": ref.key, "eval": _eval_cfg(cfg), "data_inputs": inputs})
    eval_dir = root / "evals" / h
    problem = eval_entry_problem(eval_dir)
    cached = problem is None
    if problem == "not evaluated yet":
        problem = why_no_entry(root / "evals", "key.json", config_key, inputs)
    if cached:
        log.info("eval cache hit: %s (%s): files match %s", ref.label, eval_dir, manifest.MANIFEST)
    else:
        log.info("eval cache miss: evaluating %s into %s (%s)", ref.label, eval_dir, problem)
        model, tok = load_ref(cfg, ref)
        # written aside and renamed into place: metrics.json, samples/ and the manifest appear together,
        # never half-written by a killed run or interleaved with a parallel job evaluating the same model
        tmp = eval_dir.with_name(f".{h}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        run_eval_to(cfg, model, tok, tmp)
        del model
        if eval_inputs(cfg) != inputs:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(
                f"the eval data changed while {ref.label} was evaluated; rerun to evaluate it again"
            )
        write_json(tmp / "key.json", {"model": ref.key, "config_key": config_key, "data_inputs": inputs})
        manifest.write_manifest(tmp)
        _publish_dir(tmp, eval_dir)
    manifest.save_memo()
    chain.append(
        {"kind": "eval", "label": ref.label, "model": ref.key, "dir": str(eval_dir), "cached": cached}
    )
    return eval_dir


def _publish_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; when a parallel job got there first, keep its (identical) result. A
    ``final`` that fails its manifest (damaged, or left by a killed run) is replaced."""
    try:
        os.replace(tmp, final)
    except OSError:  # final exists and is not empty
        if eval_entry_problem(final) is not None:
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
    manifest.use_memo(root / "fingerprint-memo.json")
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
    with disk_full_guard(run_dir, f"the evaluation in {eval_dir} (a rerun copies it from the cache)"):
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
