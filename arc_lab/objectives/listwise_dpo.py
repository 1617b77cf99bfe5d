"""Listwise (multi-negative) DPO over all choices of a question."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class ListwiseDPOLoss(Objective):
    """Multi-negative DPO: softmax cross-entropy of DPO's implicit rewards over every valid choice.

    Papers: the Plackett-Luce (top-1) generalisation of DPO's Bradley-Terry model in Rafailov et al.
    2023 (https://arxiv.org/abs/2305.18290, App. A.3); as a multi-negative softmax also in Chen et al.
    2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards" (InfoNCA,
    https://arxiv.org/abs/2402.05369).

    Formula, per question with valid choices V (``batch.mask``) and gold g (``batch.gold``)::

        r_k  = β · (logp(y_k) - ref(y_k)) / |y_k|_norm
        loss = -log( exp(r_g) / Σ_{k∈V} exp(r_k) ) = logsumexp_{k∈V} r_k - r_g

    With K=2 this is exactly DPO: ``logsumexp(r_w, r_l) - r_w = -log σ(r_w - r_l)``.

    Intuition: a multiple-choice question has one gold and 2-4 distractors; instead of sampling one
    rejected answer per pair, every distractor competes at once, and the gradient concentrates on the
    distractors the policy currently likes most (softmax weights). Padded choices get -inf: no mass,
    no gradient.

    Usual ranges: β as DPO (0.01-0.5, default 0.1) with ``norm="sum"``; with per-token/char norms the
    rewards are |y| times smaller, so β should grow accordingly (as dpo_norm's β ≈ 5).

    Args:
        beta: inverse temperature β of the implicit reward.
        norm: length unit the log-ratios are divided by (``sum`` is DPO's).
    """

    needs_reference = True
    input_kind = InputKind.LIST

    def __init__(self, *, beta: float = 0.1, norm: Norm = "sum") -> None:
        super().__init__()
        Fn.check_positive(beta, "beta", type(self).__name__)
        Fn.check_norm(norm, type(self).__name__)
        self.beta = beta
        self.norm = norm

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Listwise DPO loss.

        Args:
            batch: (B, K) logps/ref_logps/lengths/mask with ``gold`` (B,); rows may pad choices
                (``mask`` False) but need the gold and at least one competitor valid.

        Returns:
            Scalar loss and the rewards/accuracy metrics of :func:`functional.list_metrics`.
        """
        name = type(self).__name__
        competitors = Fn.check_list(batch, name)
        rewards = self.beta * Fn.log_ratios(batch, self.norm, name)  # (B, K)
        loss = Fn.list_cross_entropy(rewards, batch.gold, batch.mask.bool()).mean()
        return loss, Fn.list_metrics(rewards, batch.gold, competitors)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, norm={self.norm!r}"
