"""Conservative DPO (label-smoothed DPO)."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class CDPOLoss(Objective):
    """cDPO: DPO with the preference label flipped with probability ε (label smoothing).

    Paper: Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO"
    (https://ericmitchell.ai/cdpo.pdf).

    Formula: ``loss = -(1-ε)·log σ(β·h) - ε·log σ(-β·h)``, ``h`` as in DPO.

    Intuition: with noisy labels the optimum is a finite margin (σ(βh) → 1-ε) instead of an unbounded
    one, which limits over-optimisation of the log-ratios.

    Usual ranges: ε ∈ [0, 0.5) (0 is DPO; 0.1-0.3 typical), β ∈ [0.01, 0.5]. Defaults: ε = 0.1,
    β = 0.1 (DPO's).

    Args:
        beta: inverse temperature β of the implicit reward.
        label_smoothing: ε, assumed probability that a preference label is flipped.
        norm: length unit the log-ratios are divided by (``sum`` is the paper's).
    """

    needs_reference = True
    input_kind = InputKind.PAIR

    def __init__(self, *, beta: float = 0.1, label_smoothing: float = 0.1, norm: Norm = "sum") -> None:
        super().__init__()
        name = type(self).__name__
        Fn.check_positive(beta, "beta", name)
        Fn.check_half_open(label_smoothing, 0.0, 0.5, "label_smoothing", name)
        Fn.check_norm(norm, name)
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.norm = norm

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """cDPO loss of pairs (column 0 chosen), shapes (B, 2); needs ``ref_logps``."""
        name = type(self).__name__
        Fn.check_k(batch, 2, name)
        rewards = self.beta * Fn.log_ratios(batch, self.norm, name)  # (B, 2)
        logits = rewards[:, 0] - rewards[:, 1]
        eps = self.label_smoothing
        loss = ((1 - eps) * Fn.sigmoid_loss(logits) + eps * Fn.sigmoid_loss(-logits)).mean()
        return loss, Fn.pair_metrics(rewards[:, 0], rewards[:, 1])

    def extra_repr(self) -> str:
        return f"beta={self.beta}, label_smoothing={self.label_smoothing}, norm={self.norm!r}"
