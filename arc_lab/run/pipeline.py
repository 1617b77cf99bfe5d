"""Run a planned chain of stages (:func:`arc_lab.run.plan.plan_chain`) through the stage and eval caches.

Every stage of the chain is trained unless ``<output_root>/stages/<hash>/`` has it (the key:
:func:`arc_lab.run.plan.stage_hash`): a finished stage (``DONE`` and a ``MANIFEST.json`` its files still match)
is reused; an unfinished one resumes from its checkpoint; a finished one whose files no longer match its
manifest is rebuilt (logged as a WARNING naming the damage); anything that matters changing gives a new hash.
``<hash>/`` holds the resolved config, the training checkpoints and the final ``model/``. A model's identity
(what its evaluations and the stages built on it are keyed on) includes the digest of its weights.
Evaluations are cached the same way under ``<output_root>/evals/<hash>/`` (model identity + eval config +
content of the eval data), so a sweep evaluates the base model once; an entry that fails its manifest (a
truncated ``metrics.json``...) is a logged miss and is recomputed. Every hit and miss is logged with its
reason. File digests are memoised in ``<output_root>/fingerprint-memo.json`` (:mod:`arc_lab.run.manifest`).

The run folder (Hydra's output dir) gets ``config.yaml``, ``provenance.json``, ``chain.json`` (every
stage and evaluation with its cache path), the final model's ``metrics.json`` and ``samples/``, and
``summary.md`` (the before/after table that is also printed).

Objects (models, data, objective, loggers, evaluation) come from :mod:`arc_lab.run.build`; training from
:func:`arc_lab.run.stage.train_stage`, which takes flat arguments.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

from arc_lab import dist
from arc_lab.config import ConfigError, RunConfig
from arc_lab.eval.metrics import NonFiniteLogLikelihood
from arc_lab.run import build, manifest
from arc_lab.run.cache import (
    STAGE_ENTRY_PARTS,
    eval_entry_problem,
    publish_eval_dir,
    stage_entry_problem,
    stage_lock,
    why_no_entry,
)
from arc_lab.run.plan import ModelRef, root_ref, stage_config_key, stage_hash, stage_label
from arc_lab.run.runinfo import (
    atomic_write_text,
    config_hash,
    disk_full_guard,
    write_json,
    write_probe,
    write_provenance,
)
from arc_lab.stage_kinds import STAGE_KINDS

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- stages
def ensure_stage(
    run: RunConfig, parent: ModelRef, root: Path, chain: list[dict], cell_logger=None
) -> ModelRef:
    """Train the stage ``run`` describes on top of ``parent`` unless the stage cache has it intact."""
    label = stage_label(run, parent)
    inputs = build.stage_inputs(run)
    h = stage_hash(run, parent.key, inputs)
    stage_dir = root / "stages" / h
    _maybe_eval(run, parent, root, chain, when="before")
    offset = sum(c["steps"] for c in chain if c["kind"] == "stage")  # W&B steps continue along the chain
    problem = stage_entry_problem(stage_dir)
    cached = problem is None
    config_key = config_hash(stage_config_key(run, parent.key))
    if problem == "not trained yet":
        problem = why_no_entry(root / "stages", "provenance.json", config_key, inputs)
    if not cached:
        with stage_lock(stage_dir, label):
            cached = stage_entry_problem(stage_dir) is None  # a parallel job may have trained it meanwhile
            if not cached:
                _train_entry(
                    run, parent, stage_dir, h, config_key, inputs, problem, label, cell_logger, offset
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
        {
            "kind": "stage",
            "label": label,
            "hash": h,
            "dir": str(stage_dir),
            "cached": cached,
            "steps": steps,
            "seed": run.stage.optim.seed,
        }
    )
    try:
        _maybe_eval(run, ref, root, chain, when="after")
    except NonFiniteLogLikelihood as e:  # weights that cannot be scored are no finished stage
        (stage_dir / "DONE").unlink(missing_ok=True)
        raise NonFiniteLogLikelihood(f"{e}. Stage {label} ({stage_dir}) is no longer marked DONE") from e
    return ref


def _train_entry(
    run: RunConfig,
    parent: ModelRef,
    stage_dir: Path,
    h: str,
    config_key: str,
    inputs: dict[str, str],
    problem: str | None,
    label: str,
    cell_logger,
    offset: int,
) -> None:
    """Train (or rebuild) the stage entry ``stage_dir``, then write its manifest and ``DONE``."""
    from arc_lab.run.stage import PrefixLogger, train_stage
    from arc_lab.train.args import Runtime

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
    if dist.is_main_process():
        write_provenance(
            stage_dir,
            build.as_dict(run),
            stage_hash=h,
            init=parent.key,
            config_key=config_key,
            data_inputs=inputs,
        )
    objective = build.objective(run)
    model, tok = build.load_model(run, parent.path, to_device=True)
    examples, info = build.training_examples(run, objective.input_kind, tok)
    if dist.is_main_process():
        write_json(stage_dir / "data.json", info)
    log.info("stage %s: %s", label, info)
    train_stage(
        model,
        tok,
        objective,
        examples,
        build.stage_args(run),
        stage_dir=stage_dir,
        label=label,
        runtime=Runtime(
            stepper_factory=build.stepper_factory(run),
            logger=PrefixLogger(cell_logger, f"{label}/", offset) if cell_logger else None,
            eval_fn=build.periodic_eval_fn(run, tok),
        ),
    )
    now = build.stage_inputs(run)
    if now != inputs:
        changed = sorted(k for k in set(now) | set(inputs) if now.get(k) != inputs.get(k))
        raise RuntimeError(
            f"the data of stage {label} changed while it trained ({changed}); {stage_dir} is left unfinished "
            "(no DONE): rerun to train it on the data as it is now"
        )
    if dist.is_main_process():
        manifest.write_manifest(
            stage_dir, STAGE_ENTRY_PARTS
        )  # last but DONE: a stage is whole once both exist
        atomic_write_text(stage_dir / "DONE", h + "\n")
    dist.barrier()


# ------------------------------------------------------------------------------------------ evaluation
def _maybe_eval(run: RunConfig, ref: ModelRef, root: Path, chain: list[dict], when: str) -> None:
    if getattr(run.eval, when):
        ensure_eval(run, ref, root, chain)


def ensure_eval(run: RunConfig, ref: ModelRef, root: Path, chain: list[dict]) -> Path | None:
    """Evaluate ``ref`` with ``run.eval`` unless the eval cache has it; return the eval directory.

    In a multi-process (DeepSpeed/torchrun) run only rank 0 evaluates; other ranks get None.
    """
    if not dist.is_main_process():
        return None
    done = [c for c in chain if c["kind"] == "eval" and c["model"] == ref.key]
    if done:
        return Path(done[0]["dir"])
    inputs = build.eval_inputs(run)
    key = {"model": ref.key, "eval": build.eval_key(run)}
    config_key, h = config_hash(key), config_hash({**key, "data_inputs": inputs})
    eval_dir = root / "evals" / h
    problem = eval_entry_problem(eval_dir)
    cached = problem is None
    if problem == "not evaluated yet":
        problem = why_no_entry(root / "evals", "key.json", config_key, inputs)
    if cached:
        log.info("eval cache hit: %s (%s): files match %s", ref.label, eval_dir, manifest.MANIFEST)
    else:
        log.info("eval cache miss: evaluating %s into %s (%s)", ref.label, eval_dir, problem)
        model, tok = build.load_model(run, ref.path)
        # written aside and renamed into place: metrics.json, samples/ and the manifest appear together,
        # never half-written by a killed run or interleaved with a parallel job evaluating the same model
        tmp = eval_dir.with_name(f".{h}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build.evaluate(run, model, tok, tmp)
        del model
        if build.eval_inputs(run) != inputs:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(
                f"the eval data changed while {ref.label} was evaluated; rerun to evaluate it again"
            )
        write_json(tmp / "key.json", {"model": ref.key, "config_key": config_key, "data_inputs": inputs})
        manifest.write_manifest(tmp)
        publish_eval_dir(tmp, eval_dir)
    manifest.save_memo()
    chain.append(
        {"kind": "eval", "label": ref.label, "model": ref.key, "dir": str(eval_dir), "cached": cached}
    )
    return eval_dir


# ------------------------------------------------------------------------------------------------ run
def run_pipeline(plan: list[RunConfig], run_dir: str | Path) -> float | None:
    """Run a validated chain (:func:`arc_lab.run.plan.plan_chain`; its last entry is the run's own config) into
    ``run_dir``; return the final first-task acc_norm (what a Hydra sweeper optimises)."""
    run_dir = Path(run_dir)
    run = plan[-1]
    root = Path(run.output_root)
    for cache in (root / "stages", root / "evals"):  # before any work: nothing computed is thrown away
        reason = write_probe(cache if cache.is_dir() else root)  # no empty cache folder left behind
        if reason is not None:
            raise ConfigError(
                f"output_root={run.output_root}: cannot write the cache folder {cache} ({reason}); "
                "choose a writable output_root=<dir>"
            )
    random.seed(run.seed)
    if dist.is_main_process():  # one writer of the run folder in a multi-rank run
        write_provenance(run_dir, build.as_dict(run))
    manifest.use_memo(root / "fingerprint-memo.json")
    chain: list[dict] = []
    ref = root_ref(plan[0])
    logger = build.cell_logger(run, run_dir)
    try:
        for stage_run in plan:
            if STAGE_KINDS[stage_run.stage.name].trains:
                ref = ensure_stage(stage_run, ref, root, chain, cell_logger=logger)
        final = ensure_eval(run, ref, root, chain)
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
    table = summary_table(chain) + "\n\n" + seed_line(run.seed, chain)
    atomic_write_text(run_dir / "summary.md", table + "\n")
    print(table)
    return _headline(final, list(run.eval.tasks))


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

    rows: list[tuple[str, dict[str, Any]]] = []
    tasks: list[str] = []
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
            cells.append(f"{_pm(m, 'acc')} | {_pm(m, 'acc_norm')} | {m.get('n', '')}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_line(seed: int, chain: list[dict]) -> str:
    """``seed 1 (cpt: 1, cpt→dpo: 1)``: the run's seed and each trained stage's (a stage's own
    ``stage.optim.seed`` wins over the run's)."""
    stages = [f"{c['label']}: {c['seed']}" for c in chain if c["kind"] == "stage"]
    return f"seed {seed}" + (f" ({', '.join(stages)})" if stages else " (no trained stage)")


def _pm(m: dict[str, Any], metric: str) -> str:
    """``0.5000 ± 0.0500``; a stderr that is null in ``metrics.json`` (one scored item) reads ``n/a``."""
    value, stderr = m.get(metric), m.get(f"{metric}_stderr")
    shown = "nan" if value is None else f"{value:.4f}"
    return f"{shown} ± {'n/a' if stderr is None else f'{stderr:.4f}'}"
