"""Task layer and backend dispatch: ``run_eval(backend, ...)`` / ``evaluate(...)`` -> metrics (+ files).

Backends: ``ours`` (prefix-shared engine), ``lm_eval`` (lm-evaluation-harness itself), ``both`` (both, then
a comparison: largest per-item log-likelihood difference and any acc / acc_norm disagreement).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arc_lab.data.loaders import dataset_fingerprint, records_fingerprint
from arc_lab.eval.outputs import task_metrics, write_outputs
from arc_lab.eval.tasks import EVAL_SPLIT, check_task, scored_split
from arc_lab.run.runinfo import disk_full_guard

log = logging.getLogger(__name__)
BACKENDS = ("ours", "lm_eval", "both")


def _fewshot_map(tasks: Sequence[str], num_fewshot: int | dict[str, int]) -> dict[str, int]:
    if isinstance(num_fewshot, dict):
        missing = [t for t in tasks if t not in num_fewshot]
        if missing:
            raise ValueError(f"eval.num_fewshot has no entry for tasks {missing}")
        return {t: int(num_fewshot[t]) for t in tasks}
    return {t: int(num_fewshot) for t in tasks}


def load_task_items(task: str, data_dir, split: str = EVAL_SPLIT):
    """(scored split, few-shot pool) of a task via :func:`arc_lab.data.loaders.load_mc`.

    ``split`` is ``eval.split``: ``test`` scores the task's registered ``eval_split`` (lm-eval's choice);
    ``validation`` keeps it out of model selection (hyper-parameter searches); see
    :func:`arc_lab.eval.tasks.scored_split`. The few-shot pool is the entry's ``fewshot_split`` (train), as
    in lm-eval. A repeated id in the scored split fails; rows of the pool identical to an earlier one are
    dropped, with a warning.
    """
    from arc_lab.data.loaders import DataError, load_mc, split_location

    spec, split = check_task(task), scored_split(task, split)
    items = load_mc(task, split, data_dir)
    if not items:
        raise DataError(
            f"{split_location(task, split, data_dir)}: the {split} split of eval task {task!r} has no "
            f"questions; fill it or drop {task} from eval.tasks"
        )
    return items, load_mc(task, spec.fewshot_split, data_dir, duplicates="drop")


def eval_data_inputs(
    tasks: Sequence[str], data_dir, split: str = EVAL_SPLIT, num_fewshot: int | dict[str, int] = 0
) -> dict[str, str]:
    """Content fingerprints of what an evaluation reads (see :func:`load_task_items`), for the eval cache key:
    each task's scored split, and its few-shot pool when examples are drawn from it (a 0-shot score does
    not depend on the train split).

    Raises:
        ValueError, DataSourceError: unknown task, or the data cannot be found.
    """
    for t in tasks:
        check_task(t)
    shots = _fewshot_map(tasks, num_fewshot)
    out = {}
    for t in tasks:
        scored, pool = scored_split(t, split), check_task(t).fewshot_split
        out[f"{t}/{scored}"] = dataset_fingerprint(t, scored, data_dir)
        if shots[t]:
            out[f"{t}/{pool}"] = dataset_fingerprint(t, pool, data_dir)
    return out


def compare_samples(ours: dict[str, list[dict]], ref: dict[str, list[dict]]) -> dict:
    """Per-task parity report between two sample sets (same tasks, same docs).

    Returns:
        ``{task: {max_abs_ll_diff, n_items, n_choices, acc_disagree, acc_norm_disagree, context_mismatch}}``.
    """
    report = {}
    for task, recs in ours.items():
        other = {r["doc_id"]: r for r in ref[task]}
        if set(other) != {r["doc_id"] for r in recs}:
            raise ValueError(f"{task}: the two backends scored different docs")
        dis: dict[str, list] = {"acc": [], "acc_norm": [], "context": []}
        diff, n_choices = 0.0, 0
        for r in recs:
            o = other[r["doc_id"]]
            diff = max(
                diff, *(abs(a - b) for a, b in zip(r["loglikelihoods"], o["loglikelihoods"], strict=True))
            )
            n_choices += len(r["loglikelihoods"])
            for key in ("acc", "acc_norm"):
                if r[key] != o[key]:
                    dis[key].append(r["doc_id"])
            if r["context_hash"] != o["context_hash"]:
                dis["context"].append(r["doc_id"])
        report[task] = {
            "max_abs_ll_diff": diff,
            "n_items": len(recs),
            "n_choices": n_choices,
            "acc_disagree": dis["acc"],
            "acc_norm_disagree": dis["acc_norm"],
            "context_mismatch": dis["context"],
        }
    return report


def run_eval(
    backend: str,
    model,
    tokenizer,
    *,
    tasks: Sequence[str],
    num_fewshot: int | dict[str, int],
    limit: int | float | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    data_dir: str | Path | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    task_items: dict | None = None,
    split: str = EVAL_SPLIT,
) -> dict:
    """Evaluate ``model`` on ``tasks`` with one backend; write files when ``out_dir`` is given.

    Args:
        backend: ``ours`` | ``lm_eval`` | ``both``.
        model, tokenizer: in-memory causal LM and tokenizer.
        tasks: task names (``arc_challenge``, ``arc_easy``, ``openbookqa``, ``sciq``, ``builtin``).
        num_fewshot: one n for all tasks, or ``{task: n}``.
        limit: first N test docs per task, or a fraction < 1; None = all.
        sample: score a seeded random subset of this many docs (after ``limit``); ``ours`` only.
        sample_seed: the subset's seed.
        data_dir: data folder for :func:`arc_lab.data.loaders.load_mc` (None: its default).
        batch_size: our engine's questions per context pass (lm-eval always runs at its reference 8).
        max_length: truncation window for both backends; None = as lm-eval derives it.
        out_dir: where ``metrics.json`` and ``samples/`` go (``both``: ours at the top, lm-eval's under
            ``lm_eval/``, the comparison in ``metrics.json["parity"]``).
        progress: tqdm bars.
        task_items: ``{task: (eval_items, fewshot_pool)}`` to bypass the loader (tests, benchmarks).
        split: ``eval.split``: ``test`` scores each task's registered ``eval_split`` (lm-eval's choice, the
            default) and ``validation`` its validation split (for model selection, so that a search never
            sees the scored split); the split read is recorded per task in ``metrics.json``.

    Returns:
        The ``metrics.json`` dict: ``{task: {acc, acc_stderr, acc_norm, acc_norm_stderr, acc_bytes, n,
        num_fewshot, dataset_fingerprint}, "model_fingerprint": ..., "backend": ...}`` (+ ``parity`` for both).
    """
    if backend not in BACKENDS:
        raise ValueError(f"eval.backend={backend!r}: expected one of {BACKENDS}")
    if not tasks:
        raise ValueError("eval.tasks is empty")
    for t in tasks:
        check_task(t)
    if sample is not None and backend != "ours":
        raise ValueError(f"eval.sample={sample} needs eval.backend=ours (lm-eval's limit takes the first N)")
    shots = _fewshot_map(tasks, num_fewshot)
    items = task_items if task_items is not None else {t: load_task_items(t, data_dir, split) for t in tasks}
    scored = {t: scored_split(t, split) for t in tasks}
    fps = {
        t: (
            dataset_fingerprint(t, scored[t], data_dir)
            if task_items is None
            else records_fingerprint(items[t][0], origin=False)  # in-memory items: no file to hash
        )
        for t in tasks
    }
    from arc_lab.models import model_fingerprint

    model_fp = model_fingerprint(model)
    samples = {}
    was_training = model.training
    model.eval()  # dropout off for both backends (HFLM does not call eval() on a model object)
    try:
        if backend in ("ours", "both"):
            from arc_lab.eval.ours import evaluate_items

            samples["ours"] = {
                t: evaluate_items(
                    model,
                    tokenizer,
                    t,
                    items[t][0],
                    items[t][1],
                    num_fewshot=shots[t],
                    limit=limit,
                    sample=sample,
                    sample_seed=sample_seed,
                    batch_size=batch_size,
                    max_length=max_length,
                    progress=progress,
                )
                for t in tasks
            }
        if backend in ("lm_eval", "both"):
            from arc_lab.eval.lmeval_backend import run_lm_eval

            samples["lm_eval"] = run_lm_eval(
                model,
                tokenizer,
                {t: items[t] for t in tasks},
                num_fewshot=shots,
                limit=limit,
                max_length=max_length,
            )
    finally:
        model.train(was_training)
    metrics: dict[str, dict[str, Any]] = {}
    for name, per_task in samples.items():
        metrics[name] = {
            t: {
                **task_metrics(per_task[t], num_fewshot=shots[t], fingerprint=fps[t]),
                "split": scored[t],
                **({"sample": sample, "sample_seed": sample_seed} if sample is not None else {}),
            }
            for t in tasks
        }
        metrics[name].update(model_fingerprint=model_fp, backend=name)
        _count_truncated(name, metrics[name], per_task)
    main = "ours" if "ours" in samples else "lm_eval"
    result = metrics[main]
    if backend == "both":
        result["parity"] = compare_samples(samples["ours"], samples["lm_eval"])
        result["lm_eval"] = metrics["lm_eval"]
        _log_parity(result["parity"])
    if out_dir is not None:
        with disk_full_guard(out_dir, "this evaluation's metrics and samples were not saved (not cached)"):
            write_outputs(out_dir, result, samples[main])
            if backend == "both":
                write_outputs(Path(out_dir) / "lm_eval", metrics["lm_eval"], samples["lm_eval"])
    return result


def _count_truncated(backend: str, metrics: dict, per_task: dict[str, list[dict]]) -> None:
    """``truncated_items`` per task (items with a continuation cut to the context window) into ``metrics``,
    with a WARNING when any was cut; nothing for a backend whose samples do not say."""
    for task, records in per_task.items():
        if not records or "truncated" not in records[0]:
            continue
        cut = sum(1 for r in records if any(r.get("truncated") or []))
        metrics[task]["truncated_items"] = cut
        if cut:
            log.warning(
                "eval %s (%s): %d of %d items are longer than the context window and were cut from the left, "
                "as lm-eval cuts them (truncated=true in samples/%s.jsonl)",
                task,
                backend,
                cut,
                len(records),
                task,
            )


def _log_parity(parity: dict) -> None:
    for task, p in parity.items():
        log.info(
            "parity %s: max |ll diff| %.3g over %d choices; acc disagree %s; acc_norm disagree %s",
            task,
            p["max_abs_ll_diff"],
            p["n_choices"],
            p["acc_disagree"],
            p["acc_norm_disagree"],
        )
