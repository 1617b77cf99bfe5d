"""Kahneman-Tversky Optimisation (unpaired: the gold answer is desirable, every distractor undesirable)."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class KTOLoss(Objective):
    """KTO: a prospect-theoretic value of each answer on its own, relative to a KL reference point.

    Paper: Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"
    (https://arxiv.org/abs/2402.01306), eq. (7); TRL's ``KTOTrainer`` (``loss_type="kto"``).

    Formula, per question with valid choices V (``batch.mask``) and gold g (``batch.gold``)::

        ρ_k  = (logp(y_k) - ref(y_k)) / |y_k|_norm                       (log-ratio of answer k)
        z0   = max(0, mean over the mismatched pairs (x_i, y'_j) of the micro-batch of
                      (logp(y'_j|x_i) - ref(y'_j|x_i)) / |y'_j|_norm)     (detached: no gradient)
        ℓ_g  = λ_D · (1 - σ(β·(ρ_g - z0)))                               (desirable: the gold)
        ℓ_k  = λ_U · (1 - σ(β·(z0 - ρ_k)))   for k ∈ V, k ≠ g             (undesirable: distractors)
        loss = Σ_{rows} Σ_{k∈V} ℓ_k / Σ_{rows} |V|

    i.e. TRL's mean over the concatenated desirable and undesirable examples of the batch; padded
    choices count nowhere. z0 estimates KL(π_θ‖π_ref) from answers that do not belong to the prompt
    (the loop attaches them as ``batch.mismatched``, declared by ``needs_mismatched``): TRL builds its
    "KL dataset" once by pairing example i's prompt with example i-1's completion, and so does the loop
    (every answer of example i-1, so the mismatched answers are the same kind of set as the matched
    ones). z0 is detached and clamped at 0 as in the paper and TRL; in a data-parallel run it is this
    process's micro-batch estimate (TRL averages it over processes).

    Intuition: no pairs; each answer is pushed up (gold) or down (distractor) relative to how far the
    policy has moved from the reference on average, and the sigmoid saturates, so answers that are
    already clearly right or wrong stop pulling (the "loss aversion" of prospect theory is λ_U vs λ_D).

    Weights: the paper recommends λ_D·n_D / (λ_U·n_U) ∈ [1, 4/3]. A multiple-choice question gives
    n_D = 1 gold and n_U = K-1 distractors, so the defaults λ_D = 1, λ_U = 0.3 give 1/(0.3·3) ≈ 1.11 for
    4 choices (K=3: 1.67, K=5: 0.83). TRL's defaults (1, 1) would give 1/3 here. The logged metric
    ``kto/balance`` is λ_D·n_D / (λ_U·n_U) of the batch.

    Usual ranges: β ∈ [0.01, 1] (paper/TRL 0.1) with ``norm="sum"``; per-token/char norms make the
    log-ratios |y| times smaller (scale β up accordingly).

    Args:
        beta: β, scale of the log-ratio inside the sigmoid.
        desirable_weight: λ_D, weight of the gold answer's loss.
        undesirable_weight: λ_U, weight of each distractor's loss.
        norm: length unit the log-ratios (and the KL estimate) are divided by; ``sum`` is the paper's.
    """

    needs_reference = True
    needs_mismatched = True
    input_kind = InputKind.LIST

    def __init__(
        self,
        *,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 0.3,
        norm: Norm = "sum",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        Fn.check_positive(beta, "beta", name)
        Fn.check_positive(desirable_weight, "desirable_weight", name)
        Fn.check_positive(undesirable_weight, "undesirable_weight", name)
        Fn.check_norm(norm, name)
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight
        self.norm = norm

    def reference_point(self, batch: AnswerLogps) -> torch.Tensor:
        """z0: the detached, clamped mean log-ratio of the mismatched answers, a 0-dim tensor.

        Raises:
            ValueError: ``batch.mismatched`` (or its reference log-probs) is missing, or has no valid entry.
        """
        name = type(self).__name__
        mm = batch.mismatched
        if mm is None:
            raise ValueError(
                f"{name} needs mismatched answers (needs_mismatched=True) but batch.mismatched is None: "
                "the loop did not attach the KL pairs"
            )
        ratios = Fn.log_ratios(mm, self.norm, f"{name} (mismatched)")
        valid = mm.mask.bool()
        if not bool(valid.any()):
            raise ValueError(f"{name}: batch.mismatched has no valid answer to estimate the KL term")
        kl = torch.where(valid, ratios, torch.zeros_like(ratios)).sum() / valid.sum()
        return kl.detach().clamp_min(0)

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """KTO loss of listwise rows.

        Args:
            batch: (B, K) logps/ref_logps/lengths/mask with ``gold`` (B,), and ``mismatched``.

        Returns:
            Scalar loss; metrics of :func:`functional.list_metrics` on the rewards β·ρ, plus ``kl`` (z0),
            ``loss/desirable`` and ``loss/undesirable`` (mean weighted loss of each kind) and
            ``kto/balance``.
        """
        name = type(self).__name__
        competitors = Fn.check_list(batch, name)
        ratios = Fn.log_ratios(batch, self.norm, name)  # (B, K)
        z0 = self.reference_point(batch)
        is_gold = torch.zeros_like(batch.mask, dtype=torch.bool).scatter(1, batch.gold[:, None], True)
        desirable = self.desirable_weight * (1 - torch.sigmoid(self.beta * (ratios - z0)))
        undesirable = self.undesirable_weight * (1 - torch.sigmoid(self.beta * (z0 - ratios)))
        zero = torch.zeros_like(ratios)
        per = torch.where(is_gold, desirable, torch.where(competitors, undesirable, zero))  # (B, K)
        n_d, n_u = is_gold.sum(), competitors.sum()
        loss = per.sum() / (n_d + n_u)
        metrics = Fn.list_metrics(self.beta * ratios, batch.gold, competitors)
        metrics.update(
            {
                "kl": z0,
                "loss/desirable": (per * is_gold).sum().detach() / n_d,
                "loss/undesirable": (per * competitors).sum().detach() / n_u,
                "kto/balance": (self.desirable_weight * n_d / (self.undesirable_weight * n_u)).detach(),
            }
        )
        return loss, metrics

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, desirable_weight={self.desirable_weight}, "
            f"undesirable_weight={self.undesirable_weight}, norm={self.norm!r}"
        )
