"""Our evaluator: MCItems -> harness contexts -> prefix-shared scoring -> per-item sample records."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from arc_lab.data.records import MCItem
from arc_lab.eval.engine import Question, resolve_max_length, score_questions
from arc_lab.eval.metrics import check_finite, score_item
from arc_lab.eval.tasks import apply_limit, build_contexts, continuations, sample_indices
from arc_lab.scoring import encode_pair


def context_hash(context: str) -> str:
    """sha256 of the exact context string (lets two backends' samples be matched prompt by prompt)."""
    return hashlib.sha256(context.encode("utf-8")).hexdigest()


def encode_question(tokenizer, context: str, item: MCItem) -> Question:
    """Token ids of one question through :func:`arc_lab.scoring.encode_pair` (lm-eval's split)."""
    pairs = [encode_pair(tokenizer, context, cont) for cont in continuations(item)]
    ctx = pairs[0][0]
    if any(p[0] != ctx for p in pairs):  # cannot happen with one context string; guards encode_pair changes
        raise RuntimeError(f"item {item.id!r}: context encodes differently across choices")
    return Question(ctx, [p[1] for p in pairs])


def sample_record(
    task: str,
    doc_id: int,
    item: MCItem,
    context: str,
    loglikelihoods: Sequence[float],
    choice_tokens: Sequence[int],
) -> dict:
    """One ``samples/<task>.jsonl`` line (both backends build it with this function).

    Raises:
        NonFiniteLogLikelihood: a log-likelihood is NaN/inf (named by task, item id and choice).
    """
    check_finite(task, item.id, doc_id, loglikelihoods, item.choices)
    rec: dict[str, Any] = {
        "doc_id": doc_id,
        "id": item.id,
        "target": item.gold,
        "loglikelihoods": [float(x) for x in loglikelihoods],
        "choice_chars": [len(c) for c in item.choices],
        "choice_bytes": [len(c.encode("utf-8")) for c in item.choices],
        "choice_tokens": list(choice_tokens),
    }
    rec.update(score_item(rec["loglikelihoods"], item.choices, item.gold))
    rec["context_hash"] = context_hash(context)
    return rec


def evaluate_items(
    model,
    tokenizer,
    task: str,
    eval_items: Sequence[MCItem],
    fewshot_pool: Sequence[MCItem],
    *,
    num_fewshot: int,
    limit: int | float | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Score one task with our engine.

    Args:
        model, tokenizer: a causal LM and its tokenizer (the tokenizer's default BOS is used, as lm-eval).
        task: task name (prompt style).
        eval_items: the whole eval (test) split in dataset order; ``limit`` selects the first docs.
        fewshot_pool: the train split in dataset order.
        num_fewshot: few-shot examples per prompt.
        limit: first N docs, or a fraction < 1 (``ceil``); None = all.
        sample: score a seeded random subset of this many of those docs (see
            :func:`arc_lab.eval.tasks.sample_indices`; ``doc_id`` stays the position in the split).
        sample_seed: the subset's seed.
        batch_size: questions per context pass.
        max_length: truncation window; None = as lm-eval derives it from the model config.
        progress: tqdm bar.

    Returns:
        One sample record per scored doc (see :func:`sample_record`), plus ``truncated`` (per choice).
    """
    docs = list(eval_items)[: apply_limit(len(eval_items), limit)]
    all_contexts = build_contexts(task, docs, fewshot_pool, num_fewshot)
    doc_ids = sample_indices(len(docs), sample, sample_seed)
    docs, contexts = [docs[i] for i in doc_ids], [all_contexts[i] for i in doc_ids]
    questions = [encode_question(tokenizer, ctx, item) for ctx, item in zip(contexts, docs, strict=True)]
    max_len = max_length if max_length is not None else resolve_max_length(model, tokenizer)
    scored = score_questions(model, questions, max_length=max_len, batch_size=batch_size, progress=progress)
    records = []
    for doc_id, item, ctx, res in zip(doc_ids, docs, contexts, scored, strict=True):
        rec = sample_record(task, doc_id, item, ctx, res.loglikelihoods, res.num_tokens)
        rec["truncated"] = res.truncated
        records.append(rec)
    return records
