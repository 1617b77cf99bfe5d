"""Robust DPO: an unbiased DPO loss under symmetric label noise."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class RobustDPOLoss(Objective):
    """rDPO: DPO debiased for preference labels flipped with known probability ε.

    Paper: Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with Noisy Feedback"
    (https://arxiv.org/abs/2403.00409).

    Formula: ``loss = [-(1-ε)·log σ(β·h) + ε·log σ(-β·h)] / (1-2ε)``, ``h`` as in DPO.

    Intuition: unlike cDPO (which smooths the target), this is an unbiased estimate of the clean-label
    DPO loss: its expectation over the noisy labels equals DPO on the true labels. Note the ``+ε`` term:
    the loss can be negative.

    Usual ranges: ε ≈ 0.1 (must be < 0.5), β ∈ [0.01, 0.5]. Defaults: ε = 0.1, β = 0.1 (DPO's).

    Args:
        beta: inverse temperature β of the implicit reward.
        eps: ε, probability that a preference label is flipped.
        norm: length unit the log-ratios are divided by (``sum`` is the paper's).
    """

    needs_reference = True
    input_kind = InputKind.PAIR

    def __init__(self, *, beta: float = 0.1, eps: float = 0.1, norm: Norm = "sum") -> None:
        super().__init__()
        name = type(self).__name__
        Fn.check_positive(beta, "beta", name)
        Fn.check_half_open(eps, 0.0, 0.5, "eps", name)
        Fn.check_norm(norm, name)
        self.beta = beta
        self.eps = eps
        self.norm = norm

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Robust DPO loss of pairs (column 0 chosen), shapes (B, 2); needs ``ref_logps``."""
        name = type(self).__name__
        Fn.check_k(batch, 2, name)
        rewards = self.beta * Fn.log_ratios(batch, self.norm, name)  # (B, 2)
        logits = rewards[:, 0] - rewards[:, 1]
        eps = self.eps
        losses = ((1 - eps) * Fn.sigmoid_loss(logits) - eps * Fn.sigmoid_loss(-logits)) / (1 - 2 * eps)
        return losses.mean(), Fn.pair_metrics(rewards[:, 0], rewards[:, 1])

    def extra_repr(self) -> str:
        return f"beta={self.beta}, eps={self.eps}, norm={self.norm!r}"
