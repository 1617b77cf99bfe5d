"""Mismatched (prompt, answers) pairs for objectives that declare ``needs_mismatched`` (KTO's KL term).

KTO's reference point z0 estimates KL(π_θ‖π_ref) from answers that do not belong to their prompt. TRL's
``KTOTrainer`` builds this "KL dataset" once, before shuffling, by giving example i the completion of
example i-1 (``_get_kl_dataset``: a +1 offset); the training batch then carries both. The same is done
here on the pre-tokenised dataset: :func:`mismatched_dataset` gives example i's prompt ALL the answers of
example i-1 (example 0 gets the last one's), so the mismatched answers of a micro-batch are the same kind
of set (a gold and its distractors) as the matched ones. Being a :class:`TokenizedDataset` aligned
row-for-row with the training data, its reference log-probs go through the same disk cache
(:mod:`arc_lab.train.reference`, keyed by its own fingerprint) or the adapter-off model.

Per micro-batch, :func:`mismatched_logps` runs the policy on the mismatched rows of the same example
indices without gradient (z0 is detached anyway) and attaches their reference log-probs.

Public API: :func:`mismatched_dataset`, :func:`mismatched_logps`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from arc_lab.objectives.base import AnswerLogps
from arc_lab.train.batching import TokenizedDataset, TokenizedExample, collate
from arc_lab.train.forward import answer_logps
from arc_lab.train.lora import reference_mode

if TYPE_CHECKING:
    from arc_lab.train.setup import TrainSetup


def mismatched_dataset(dataset: TokenizedDataset) -> TokenizedDataset:
    """Example i's prompt with example (i-1) mod N's answers, lengths and gold, for every i.

    The prompt keeps its (possibly already left-truncated) tokens and loses more from the left when the
    other example's longest answer needs the room: prompt + answer never exceeds ``dataset.seq_len``.

    Raises:
        ValueError: fewer than 2 examples (an example cannot be mismatched with itself).
    """
    n = len(dataset)
    if n < 2:
        raise ValueError(
            f"mismatched pairs need at least 2 training examples (got {n}): the KL estimate pairs each "
            "prompt with another example's answers"
        )
    out, truncated = [], 0
    for i, ex in enumerate(dataset.examples):
        src = dataset.examples[i - 1]  # i = 0 takes the last example's answers
        keep = dataset.seq_len - max(len(a) for a in src.answers)
        prompt = ex.prompt[-keep:] if len(ex.prompt) > keep else ex.prompt
        truncated += len(prompt) < len(ex.prompt)
        out.append(TokenizedExample(prompt, src.answers, src.chars, src.nbytes, src.gold))
    return TokenizedDataset(dataset.kind, out, dataset.seq_len, dataset.append_eos, truncated)


def mismatched_logps(setup: TrainSetup, index: torch.Tensor, with_reference: bool) -> AnswerLogps:
    """Policy (no gradient) and, if ``with_reference``, reference log-probs of the mismatched rows of
    the examples ``index`` (a micro-batch's :attr:`Batch.index`)."""
    if setup.mismatched is None:
        raise ValueError("the objective needs mismatched pairs but the training setup built none")
    model = setup.stepper.module
    device = next(model.parameters()).device
    batch = collate(setup.mismatched, index.tolist(), setup.pad_id).to(device)
    precision = setup.optim.precision
    with torch.no_grad():
        out = answer_logps(model, batch, precision=precision)
        if with_reference:
            if setup.mismatched_ref_logps is not None:
                rows = setup.mismatched_ref_logps[batch.index.cpu(), : out.logps.shape[1]]
                out.ref_logps = rows.to(device)
            else:
                with reference_mode(model):
                    out.ref_logps = answer_logps(model, batch, precision=precision).logps
    return out
