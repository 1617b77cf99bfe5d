"""Pure tensor functions shared by the objectives: input checks, log-ratios, NLL, metrics.

Like ``torch.nn.functional`` for the loss modules: no state, no hyper-parameter defaults. Every check
raises a ``ValueError`` naming the objective (``owner``) and the field at fault, so a mis-built batch
(wrong K, missing reference log-probs) fails loudly instead of training on a silently different loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from arc_lab.objectives.base import AnswerLogps, Norm

NORMS: tuple[str, ...] = ("sum", "token", "char", "byte")


class ParamError(ValueError):
    """A hyper-parameter is out of range; ``key``, ``value`` and ``expected`` let the config layer name
    ``objective.<key>``."""

    def __init__(self, owner: str, key: str, value, expected: str) -> None:
        super().__init__(f"{owner}: {key}={value!r} must be {expected}")
        self.key, self.value, self.expected = key, value, expected


def check_norm(norm: str, owner: str) -> None:
    """Raise unless ``norm`` is one of :data:`NORMS`."""
    if norm not in NORMS:
        raise ParamError(owner, "norm", norm, f"one of {list(NORMS)}")


def check_positive(value: float, key: str, owner: str) -> None:
    """Raise unless ``value`` is finite and ``> 0``."""
    if not (math.isfinite(value) and value > 0):
        raise ParamError(owner, key, value, "a finite number > 0")


def check_non_negative(value: float, key: str, owner: str) -> None:
    """Raise unless ``value`` is finite and ``>= 0``."""
    if not (math.isfinite(value) and value >= 0):
        raise ParamError(owner, key, value, "a finite number >= 0")


def check_half_open(value: float, low: float, high: float, key: str, owner: str) -> None:
    """Raise unless ``low <= value < high``."""
    if not low <= value < high:
        raise ParamError(owner, key, value, f"in [{low:g}, {high:g})")


def check_k(batch: AnswerLogps, k: int | None, owner: str) -> None:
    """Raise unless ``batch.logps`` is (B, K) with K == ``k`` (any K >= 2 when ``k`` is None)."""
    shape = tuple(batch.logps.shape)
    if batch.logps.dim() != 2:
        raise ValueError(f"{owner}: batch.logps must be (B, K), got shape {shape}")
    if k is not None and shape[1] != k:
        raise ValueError(f"{owner}: expects K={k} answers per row, got batch.logps of shape {shape}")
    if k is None and shape[1] < 2:
        raise ValueError(f"{owner}: expects K>=2 choices per row, got batch.logps of shape {shape}")


def require_reference(batch: AnswerLogps, owner: str) -> torch.Tensor:
    """Return ``batch.ref_logps`` (B, K); raise if it is missing or mis-shaped.

    A missing reference must never degrade to "ratio = policy log-prob" or to a zero ratio (the
    loss-stuck-at-0.6931 failure of other trainers).
    """
    if batch.ref_logps is None:
        raise ValueError(
            f"{owner} needs reference log-probs (needs_reference=True) but batch.ref_logps is None: "
            "the reference forward or the reference-log-prob cache was not applied"
        )
    if batch.ref_logps.shape != batch.logps.shape:
        raise ValueError(
            f"{owner}: batch.ref_logps shape {tuple(batch.ref_logps.shape)} != batch.logps shape "
            f"{tuple(batch.logps.shape)}"
        )
    return batch.ref_logps


def log_ratios(batch: AnswerLogps, norm: Norm, owner: str) -> torch.Tensor:
    """Length-normalised policy/reference log-ratios ``(logp - ref) / |y|_norm``, shape (B, K)."""
    ref = require_reference(batch, owner)
    return batch.normalized(batch.logps - ref, norm)


def token_nll(batch: AnswerLogps) -> torch.Tensor:
    """Token-weighted NLL over the whole batch: ``-sum(logps) / sum(tokens)`` over valid entries.

    Every token of the batch weighs the same (not a mean of per-sequence means), which is what a
    packed/padding-free causal-LM loss computes.
    """
    logps = torch.where(batch.mask, batch.logps, torch.zeros_like(batch.logps))
    tokens = torch.where(batch.mask, batch.tokens, torch.zeros_like(batch.tokens))
    return -logps.sum() / tokens.sum().clamp_min(1)


def chosen_nll_per_token(batch: AnswerLogps) -> torch.Tensor:
    """Per-row NLL per token of the chosen answer (column 0): ``-logp(y_w) / |y_w|_tokens``, shape (B,).

    Averaged per sequence, then (by the caller) over the batch; TRL's CPO/RPO instead weigh every token
    of the batch equally, which differs only when chosen answers have different lengths.
    """
    return -batch.logps[:, 0] / batch.tokens[:, 0].clamp_min(1)


def sigmoid_loss(logits: torch.Tensor) -> torch.Tensor:
    """``-log σ(logits)`` elementwise, computed stably."""
    return -F.logsigmoid(logits)


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detached batch means of the implicit rewards of a pair objective.

    Args:
        chosen: (B,) reward/score of the chosen answer.
        rejected: (B,) reward/score of the rejected answer.

    Returns:
        ``rewards/chosen``, ``rewards/rejected``, ``rewards/margin`` (chosen - rejected) and
        ``accuracy`` (fraction of rows where chosen > rejected strictly; ties count as wrong, as in TRL's
        ``rewards/accuracies``, so a policy still equal to its reference logs 0, not 1).
    """
    chosen, rejected = chosen.detach(), rejected.detach()
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margin": (chosen - rejected).mean(),
        "accuracy": (chosen > rejected).float().mean(),
    }


def check_list(batch: AnswerLogps, owner: str) -> torch.Tensor:
    """Validate a listwise batch; return the (B, K) bool mask of the gold's valid competitors.

    Raises if ``gold`` points at a padded choice or a row has fewer than two valid choices (this reads
    one bool back from the device: one sync per step, negligible next to the model forward).
    """
    check_k(batch, None, owner)
    b, k = batch.logps.shape
    if batch.gold.shape != (b,) or batch.mask.shape != (b, k):
        raise ValueError(
            f"{owner}: batch.gold must be ({b},) and batch.mask ({b}, {k}); got "
            f"{tuple(batch.gold.shape)} and {tuple(batch.mask.shape)}"
        )
    mask = batch.mask.bool()
    gold_valid = mask.gather(1, batch.gold[:, None]).squeeze(1)
    bad = ~gold_valid | (mask.sum(1) < 2)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"{owner}: rows {rows} have a padded gold index or fewer than 2 valid choices")
    is_gold = torch.arange(k, device=mask.device)[None, :] == batch.gold[:, None]
    return mask & ~is_gold


def list_metrics(
    scores: torch.Tensor, gold: torch.Tensor, competitors: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Detached batch means of the rewards of a listwise objective.

    Args:
        scores: (B, K) implicit reward/score of each choice (padded entries may hold anything).
        gold: (B,) index of the gold answer.
        competitors: (B, K) bool, valid non-gold choices.

    Returns:
        ``rewards/chosen`` (gold), ``rewards/rejected`` (mean over each row's valid competitors),
        ``rewards/margin`` (their difference), ``accuracy`` (gold strictly above every valid competitor:
        a tie with any competitor counts as wrong, as in :func:`pair_metrics`).
        With K=2 these equal :func:`pair_metrics` of the two columns.
    """
    scores = scores.detach()
    gold_s = scores.gather(1, gold[:, None]).squeeze(1)
    comp_mean = torch.where(competitors, scores, torch.zeros_like(scores)).sum(1) / competitors.sum(1)
    comp_max = torch.where(competitors, scores, torch.full_like(scores, float("-inf"))).amax(1)
    return {
        "rewards/chosen": gold_s.mean(),
        "rewards/rejected": comp_mean.mean(),
        "rewards/margin": (gold_s - comp_mean).mean(),
        "accuracy": (gold_s > comp_max).float().mean(),
    }


def list_cross_entropy(scores: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row softmax cross-entropy ``-s_gold + logsumexp_{valid k} s_k``, shape (B,).

    Padded choices are set to -inf before the logsumexp, so they get neither probability mass nor
    gradient whatever they hold.
    """
    masked = torch.where(mask, scores, torch.full_like(scores, float("-inf")))
    return masked.logsumexp(1) - masked.gather(1, gold[:, None]).squeeze(1)
