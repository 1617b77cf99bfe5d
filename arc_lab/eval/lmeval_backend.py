"""The ``lm_eval`` backend: run lm-evaluation-harness 0.4.x itself on our data and our in-memory model.

The task YAML ``include``s the installed harness YAML named by the task's registry entry
(:attr:`arc_lab.data.registry.DataSet.harness_yaml`: ``tasks/arc/arc_easy.yaml``, ``openbookqa.yaml``,
``sciq.yaml``) and only swaps the dataset for local Hub-schema jsonl files written from our MCItems, so prompts,
few-shot draws and scoring are lm-eval's own. Runs fully offline (``HF_DATASETS_OFFLINE=1``,
``HF_HUB_OFFLINE=1``). Results come back in our samples/metrics format, computed from lm-eval's per-sample
``filtered_resps`` with the same pure metric functions as our backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from arc_lab.data.records import MCItem
from arc_lab.eval.ours import encode_question, sample_record
from arc_lab.eval.tasks import check_task

HFLM_BATCH_SIZE = 8


def hub_row(task: str, item: MCItem) -> dict:
    """``item`` as the row the task's harness YAML reads (its registry entry's row writer)."""
    return check_task(task).harness_row_of(item)


def write_task(
    task: str, eval_items: Sequence[MCItem], fewshot_pool: Sequence[MCItem], task_dir: Path
) -> str:
    """Write the task's few-shot and scored splits as ``<task_dir>/<task>/<split>.jsonl`` (the splits of its
    registry entry) and a task YAML reading them; returns the harness task name.

    The YAML keeps the harness YAML's ``process_docs``, prompt and metrics and points its scored split
    (``test_split``, or ``validation_split`` for a task scored on validation) at our file; the other one of
    the two is set to null so that lm-eval scores exactly our split."""
    import lm_eval

    spec = check_task(task)
    name = f"arclab_{task}"
    folder = task_dir / task
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, items in ((spec.fewshot_split, fewshot_pool), (spec.eval_split, eval_items)):
        files[split] = str(folder / f"{split}.jsonl")
        with open(files[split], "w", encoding="utf-8") as f:
            for item in items:
                f.write(
                    json.dumps(hub_row(task, item)) + "\n"
                )  # ASCII escapes: U+2028 etc. stay inside lines
    base = Path(lm_eval.__file__).parent / "tasks" / spec.harness_yaml
    # JSON is valid YAML: no quoting pitfalls with paths.
    lines = [
        f"include: {json.dumps(str(base))}",
        f"task: {name}",
        "tag: []",
        "dataset_path: json",
        "dataset_name: null",
        f"training_split: {spec.fewshot_split}",  # lm-eval draws few-shot examples from its training split
        f"validation_split: {'validation' if spec.eval_split == 'validation' else 'null'}",
        f"test_split: {'test' if spec.eval_split == 'test' else 'null'}",
        "dataset_kwargs: " + json.dumps({"data_files": files, "cache_dir": str(task_dir / "hf_cache")}),
    ]
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return name


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """The Hub and ``datasets`` offline while the harness runs (also if ``datasets`` was imported before), and
    the previous values back afterwards: a later cell of the same multirun process may read the Hub."""
    import datasets

    keys = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    saved, saved_config = {k: os.environ.get(k) for k in keys}, datasets.config.HF_HUB_OFFLINE
    os.environ.update({k: "1" for k in keys})
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        datasets.config.HF_HUB_OFFLINE = saved_config


def run_lm_eval(
    model,
    tokenizer,
    task_items: dict[str, tuple[Sequence[MCItem], Sequence[MCItem]]],
    *,
    num_fewshot: dict[str, int],
    limit: int | float | None = None,
    max_length: int | None = None,
    batch_size: int = HFLM_BATCH_SIZE,
) -> dict[str, list[dict]]:
    """Evaluate tasks with lm-eval's ``HFLM`` + ``simple_evaluate`` and return our sample records.

    Args:
        model, tokenizer: the in-memory model and tokenizer (HFLM uses them as given; device = model.device).
        task_items: ``{task: (eval_items, fewshot_pool)}``: the whole test split and the train split.
        num_fewshot: ``{task: n}``; tasks with the same n run in one ``simple_evaluate`` call (lm-eval pools
            their requests, as a multi-task CLI run would).
        limit: lm-eval's ``limit``.
        max_length: HFLM ``max_length``; None lets HFLM derive it from the model config.
        batch_size: HFLM batch size (8, the reference setting).

    Returns:
        ``{task: [sample record, ...]}`` in doc order, with lm-eval's own log-likelihoods.
    """
    with _offline():
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        out: dict[str, list[dict]] = {}
        with tempfile.TemporaryDirectory(prefix="arclab_lmeval_") as tmp:
            names = {t: write_task(t, ev, pool, Path(tmp)) for t, (ev, pool) in task_items.items()}
            tm = TaskManager(
                include_path=tmp, include_defaults=False
            )  # indexing the ~10k built-in YAMLs costs ~30 s
            for n in sorted(set(num_fewshot[t] for t in task_items)):
                tasks = [t for t in task_items if num_fewshot[t] == n]
                res = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=[names[t] for t in tasks],
                    num_fewshot=n,
                    limit=limit,
                    task_manager=tm,
                    log_samples=True,
                )
                for t in tasks:
                    out[t] = _to_records(t, res["samples"][names[t]], task_items[t][0], tokenizer)
        return out


def _to_records(task: str, logged: list[dict], eval_items: Sequence[MCItem], tokenizer) -> list[dict]:
    """Our sample records from lm-eval's logged samples (log-likelihoods from ``filtered_resps``)."""
    records = []
    for s in sorted(logged, key=lambda s: s["doc_id"]):
        item = eval_items[s["doc_id"]]
        args = [tuple(a) for a in s["arguments"]]
        context = args[0][0]
        expected = [" " + c for c in item.choices]
        if [a[1] for a in args] != expected or int(s["target"]) != item.gold:
            raise RuntimeError(
                f"{task} doc {s['doc_id']}: lm-eval's requests {args!r:.200} / target "
                f"{s['target']} do not match item {item.id!r}"
            )
        lls = [float(r[0]) for r in s["filtered_resps"]]
        tokens = [len(c) for c in encode_question(tokenizer, context, item).continuations]
        rec = sample_record(task, s["doc_id"], item, context, lls, tokens)
        for key in ("acc", "acc_norm"):  # our pure metric function must agree with lm-eval's own
            if float(s[key]) != rec[key]:
                raise RuntimeError(
                    f"{task} doc {s['doc_id']}: lm-eval {key}={s[key]} but ours {rec[key]} "
                    f"from the same log-likelihoods {lls}"
                )
        records.append(rec)
    return records
