"""Task definitions at lm-eval 0.4.x parity: prompt text, few-shot draws, ``--limit``.

Every rule here mirrors a line of lm-eval 0.4.x (its ``ConfigurableTask`` and ``simple_evaluate``):

* ``doc_to_text`` per task (its prompt style in :data:`arc_lab.data.registry.DATASETS`): ARC / builtin
  ``"Question: {q}\\nAnswer:"``; OpenBookQA the raw question stem; SciQ
  ``support.lstrip() + "\\nQuestion: {q}\\nAnswer:"``.
* The target delimiter is ``" "``, the few-shot delimiter ``"\\n\\n"``; a few-shot block is
  ``doc_to_text(fs) + " " + gold_text(fs) + "\\n\\n"``; the eval part has no trailing space.
* Few-shot examples come from the train split, drawn by ONE ``random.Random(1234)`` per task, advanced doc
  by doc in eval-doc order (``rnd.sample(pool, n)``, in sampled order). For a task scored on validation the
  harness draws ``n + 1`` and drops the eval doc (:func:`drops_eval_doc`).
* The scored split is the task's ``eval_split`` (``test``; ``validation`` for a task whose test answers are
  hidden, as lm-eval's HellaSwag); few-shot examples come from its ``fewshot_split`` (``train``). ``limit``
  takes the first N docs, a float below 1 ``ceil(frac * len)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from arc_lab.data.records import MCItem
from arc_lab.data.registry import DATASETS, DataSet

#: lm-eval's ``DEFAULT_OTHER_SEED``: the few-shot sampler seed set by ``simple_evaluate``.
FEWSHOT_SEED = 1234
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
#: ``eval.split`` values: ``test`` scores each task's registered ``eval_split`` (lm-eval's choice, the numbers
#: reported); ``validation`` scores its validation split (model selection that never sees the scored split).
EVAL_SPLIT = "test"
SELECTION_SPLIT = "validation"


def check_task(task: str) -> DataSet:
    """The registry entry of eval task ``task`` (every registered data set is an eval task).

    Raises:
        ValueError: ``task`` is not registered; the message lists the known tasks.
    """
    if task not in DATASETS:
        raise ValueError(f"eval task {task!r} is unknown: expected one of {sorted(DATASETS)}")
    return DATASETS[task]


def scored_split(task: str, split: str = EVAL_SPLIT) -> str:
    """The split an evaluation of ``task`` reads for ``eval.split=split``.

    Raises:
        ValueError: ``split`` is neither ``test`` nor ``validation``, or is ``validation`` for a task whose
            scored split already is its validation split (selecting on it would select on the reported split).
    """
    spec = check_task(task)
    if split == EVAL_SPLIT:
        return spec.eval_split
    if split != SELECTION_SPLIT:
        raise ValueError(f"eval.split={split!r}: expected {EVAL_SPLIT!r} or {SELECTION_SPLIT!r}")
    if spec.eval_split == SELECTION_SPLIT or SELECTION_SPLIT not in spec.splits:
        raise ValueError(
            f"eval.split={split}: task {task} has no held-out validation split (its splits "
            f"{list(spec.splits)}, scored split {spec.eval_split}); choose settings on another task"
        )
    return SELECTION_SPLIT


def doc_to_text(task: str, item: MCItem) -> str:
    """The question part of a prompt, exactly as the task's lm-eval YAML renders it."""
    return check_task(task).doc_to_text(item)


def gold_text(item: MCItem) -> str:
    """The text of the gold choice (used in few-shot blocks)."""
    return item.choices[item.gold]


def apply_limit(n_docs: int, limit: int | float | None) -> int:
    """Number of eval docs lm-eval scores for ``--limit`` (first N; a float < 1 is ``ceil(frac * n)``)."""
    if limit is None:
        return n_docs
    if isinstance(limit, float) and limit < 1.0:
        if limit <= 0:
            raise ValueError(f"eval.limit={limit}: a fractional limit must be in (0, 1)")
        return int(math.ceil(limit * n_docs))
    if limit < 0:
        raise ValueError(f"eval.limit={limit}: must be >= 0 or None")
    return min(int(limit), n_docs)


def sample_indices(n_docs: int, sample: int | None, seed: int = 0) -> list[int]:
    """Positions of a seeded random subset of ``sample`` docs out of ``n_docs``, ascending.

    Not an lm-eval option (its ``--limit`` takes the first N): contexts are still built for every doc in
    order, so a sampled doc gets exactly the few-shot prompt it gets in a full run, and its ``doc_id``
    stays its position in the split (paired comparisons with a full run stay valid).

    Raises:
        ValueError: ``sample`` below 1 or above ``n_docs``.
    """
    if sample is None:
        return list(range(n_docs))
    if not 1 <= sample <= n_docs:
        raise ValueError(f"eval.sample={sample}: expected 1 <= sample <= {n_docs} (the docs in the split)")
    return sorted(random.Random(seed).sample(range(n_docs), sample))


def drops_eval_doc(task: str) -> bool:
    """Whether lm-eval draws ``n + 1`` few-shot docs per eval doc and drops the eval doc from them.

    The harness (``ConfigurableTask.fewshot_context``) passes the eval doc to its sampler when the few-shot
    split *as configured* equals the test split. A task scored on validation (HellaSwag) sets neither
    (``test_split: null``, no ``fewshot_split``), so ``None == None`` holds: lm-eval samples ``n + 1``,
    removes docs equal to the eval doc and keeps the first ``n`` (resampling from the pool without them if
    fewer remain). ARC, OpenBookQA and SciQ set ``test_split: test``: a plain ``rnd.sample(pool, n)``.
    """
    return check_task(task).eval_split != EVAL_SPLIT


def build_contexts(
    task: str,
    eval_items: Sequence[MCItem],
    fewshot_pool: Sequence[MCItem],
    num_fewshot: int,
    seed: int = FEWSHOT_SEED,
) -> list[str]:
    """Context strings for ``eval_items`` in order, with lm-eval's few-shot draws.

    Args:
        task: task name (selects ``doc_to_text``).
        eval_items: the eval docs actually scored (already limited), in eval-split order. The generator is
            advanced once per doc, so passing the first N docs gives the same prompts as lm-eval's limit N.
        fewshot_pool: the train split in dataset order (the sampler's pool).
        num_fewshot: examples per prompt; 0 draws nothing.
        seed: the few-shot seed (lm-eval default 1234).

    Returns:
        One context string per eval item; the continuation of choice j is ``" " + choices[j]``.
    """
    if num_fewshot < 0:
        raise ValueError(f"eval.num_fewshot={num_fewshot}: must be >= 0")
    if num_fewshot and len(fewshot_pool) < num_fewshot:
        from arc_lab.data.loaders import DataError  # a user fault: the CLI reports it in one line

        raise DataError(
            f"eval.num_fewshot={num_fewshot}: task {task} needs at least {num_fewshot} train examples, "
            f"its few-shot pool has {len(fewshot_pool)} (the train split)"
        )
    rnd = random.Random(seed)
    pool = list(fewshot_pool)
    blocks = {}  # id(item) -> rendered block; the same train example recurs across prompts
    contexts = []
    spec, extra = check_task(task), num_fewshot > 0 and drops_eval_doc(task)
    rows: dict[int, dict] = {}  # id(pool item) -> the row lm-eval reads for it (compared with the eval doc's)

    def row_of(fs: MCItem) -> dict:
        if id(fs) not in rows:
            rows[id(fs)] = spec.harness_row_of(fs)
        return rows[id(fs)]

    for item in eval_items:
        if extra:  # lm-eval compares the docs it read: the rows the backend writes for them
            row = spec.harness_row_of(item)
            shots = [fs for fs in rnd.sample(pool, num_fewshot + 1) if row_of(fs) != row][:num_fewshot]
            if len(shots) < num_fewshot:
                shots = rnd.sample([fs for fs in pool if row_of(fs) != row], num_fewshot)
        else:
            shots = rnd.sample(pool, num_fewshot) if num_fewshot else []
        parts = []
        for fs in shots:
            key = id(fs)
            if key not in blocks:
                blocks[key] = doc_to_text(task, fs) + TARGET_DELIMITER + gold_text(fs) + FEWSHOT_DELIMITER
            parts.append(blocks[key])
        contexts.append("".join(parts) + doc_to_text(task, item))
    return contexts


def continuations(item: MCItem) -> list[str]:
    """The scored continuation of each choice, in choice order: ``" " + text``."""
    return [TARGET_DELIMITER + c for c in item.choices]
